"""The small networks of pyrovae.nn."""

import pytest
import torch

from pyrovae.nn import GatedDense, TwoBranchNet, concat_broadcast


def test_two_branches_are_joined_after_each_input_runs_its_own_layer_once():
    torch.manual_seed(0)
    net = TwoBranchNet(5, 3, 4, [6], 2, activation="gated")
    x = torch.randn(7, 5)  # one per data point
    z = torch.randn(11, 7, 3)  # 11 draws per data point
    seen = []
    net.first_branch.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    combined = net.combine(x, z)
    assert seen == [torch.Size([7, 5])]  # not expanded to the draws' shape first
    expected = net.joint(
        torch.cat([net.first_branch(x).expand(11, 7, 4), net.second_branch(z)], -1)
    )
    assert combined.shape == (11, 7, 2)
    torch.testing.assert_close(combined, expected)
    # one tensor [x, z] is split at the first input's width: a drop-in decoder
    torch.testing.assert_close(net(concat_broadcast(x, z)), expected)
    assert isinstance(net.first_branch[0], GatedDense) and isinstance(net.joint[0], GatedDense)
    assert [type(layer).__name__ for layer in net.joint] == ["GatedDense", "Linear"]


def test_two_branches_without_joint_hidden_layers_end_in_the_output_layer():
    net = TwoBranchNet(2, 2, 3, [], 5)
    assert [type(layer).__name__ for layer in net.joint] == ["Linear"]
    assert net.joint[0].in_features == 6
    assert net(torch.randn(4, 4)).shape == (4, 5)


def test_two_branches_refuse_a_width_below_one():
    with pytest.raises(ValueError, match="hidden layer 1 must be an integer >= 1, got 0"):
        TwoBranchNet(2, 2, 0, [], 5)
