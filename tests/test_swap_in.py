"""README's swap-in model: torch.nn's and padkern's versions agree with one state_dict,
and the example training script runs."""
import os
import subprocess
import sys

import torch

from benchmarks.bench_swap_in import PadkernClassifier, TorchClassifier

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_swap_in_models_agree():
    torch.manual_seed(0)
    theirs = TorchClassifier(16).double()
    ours = PadkernClassifier(16).double()
    ours.load_state_dict(theirs.state_dict())
    tokens = torch.randint(1, 1000, (5, 9))
    lengths = torch.tensor([9, 1, 4, 7, 2])
    expected = theirs(tokens, lengths)
    actual = ours(tokens, lengths)
    torch.testing.assert_close(actual, expected)
    expected.sum().backward()
    actual.sum().backward()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_tagger_example_trains():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "repeat_tagger.py"), "--epochs", "1"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.8, result.stdout
