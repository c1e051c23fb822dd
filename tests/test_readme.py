"""README's example runs and says what it claims."""
import os
import re


def test_readme_example_runs():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["r"].offsets.tolist() == [0, 10, 10, 13, 20]
    assert tuple(scope["r"].values.shape) == (20, 32)
    assert tuple(scope["h_n"].shape) == (4, 4, 64)
    assert tuple(scope["padded"].shape) == (4, 10, 128)
    assert tuple(scope["out"].shape) == (4, 10, 128)
