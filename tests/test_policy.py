"""The static policy: an allowlist of what a kernel may reach, resolved against the real libraries.

Each refused case is a way to reach the interpreter, files, processes or raw memory that a
denylist of names missed; each accepted case is legitimate code a denylist refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import policy

ALLOWED = ("numpy", "numba", "math")
TARGETS = Path(__file__).resolve().parent.parent / "targets"

REFUSED = {
    # attribute walks from allowed modules to os/sys/threading/gc/builtins
    "numba.config.os": "import numba\ndef f():\n    return numba.config.os.system('x')\n",
    "numba.core.config": "from numba.core import config\n",
    "np.lib.npyio.os": "import numpy as np\nx = np.lib.npyio.os\n",
    "np.core.multiarray": "import numpy as np\nnp.core.multiarray\n",
    "np.sys": "import numpy as np\nnp.sys\n",
    "numba.misc": "import numba.misc\n",
    "np.testing.run_threaded": "import numpy as np\nnp.testing.run_threaded(print)\n",
    "np.testing.tempdir": "import numpy as np\nnp.testing.tempdir\n",
    # a module held as a value can no longer be resolved
    "module alias": "import numpy as np\nm = np.lib\n",
    "module argument": "import numpy as np\ndef f(g):\n    return g(np)\n",
    "module in a list": "import numpy as np\nmods = [np]\n",
    # files, raw memory, C callbacks
    "np.load": "import numpy as np\nnp.load('x')\n",
    "from numpy import load": "from numpy import load\n",
    "as_strided": "from numpy.lib.stride_tricks import as_strided\n",
    "numba.carray": "from numba import carray\n",
    "numba.cfunc": "import numba\n@numba.cfunc('void()')\ndef f():\n    pass\n",
    "intrinsic": "from numba.extending import intrinsic\n",
    "array ctypes": "def f(a):\n    return a.ctypes.data\n",
    # builtins that reach the interpreter
    "getattr": "def f(x):\n    return getattr(x, 'y')\n",
    "open": "def f():\n    open('x')\n",
    "__import__": "def f():\n    return __import__('os')\n",
    "SystemExit": "def f():\n    raise SystemExit(0)\n",
    "builtin in a class body": "class K:\n    loader = globals\n",
    # frames and dunders
    "frame walk": "def f():\n    g = (i for i in range(3))\n    return g.gi_frame.f_globals\n",
    "dunder attribute": "def f(x):\n    return x.__class__.__subclasses__()\n",
    "format-string walk": "def f(x):\n    return '{0.__init__.__globals__}'.format(x)\n",
    # imports and monkeypatching
    "os": "import os\n",
    "relative": "from . import reference\n",
    "star": "from numpy import *\n",
    "monkeypatch": "import numpy as np\nnp.full = None\n",
    "monkeypatch an imported name": "from numba import njit\nnjit.x = 1\n",
}

ACCEPTED = {
    "sliding_window_view": "import numpy as np\ndef f(x):\n    return np.lib.stride_tricks.sliding_window_view(x, 3)\n",
    "from stride_tricks": "from numpy.lib.stride_tricks import sliding_window_view\n",
    "jitclass": "from numba.experimental import jitclass\nimport numba\nspec = numba.experimental.jitclass\n",
    "register_jitable": "import numba\n@numba.extending.register_jitable\ndef f(x):\n    return x\n",
    "numba.core types": "from numba.core import types\nt = types.float32\n",
    "numba.types": "import numba\nt = numba.types.float32\n",
    "super().__init__()": "class A:\n    def __init__(self):\n        super().__init__()\n",
    "assert_allclose": "import numpy as np\ndef f(a, b):\n    np.testing.assert_allclose(a, b)\n",
    "own .core/.load/.modules": ("class K:\n    def __init__(self, core, load, modules):\n        self.core = core\n"
                                 "        self.load = load.load\n        self.modules = modules.modules\n"),
    "parameters named input, vars": "def f(input, vars):\n    return input + vars\n",
    "a local named open": "def f(x):\n    open = x + 1\n    return open\n",
    "njit, prange, math": ("import numba\nimport numpy as np\nimport math\n@numba.njit(cache=True, fastmath=False)\n"
                           "def f(x):\n    s = 0.0\n    for i in numba.prange(x.shape[0]):\n        s += math.sqrt(x[i])\n"
                           "    return np.float32(s)\n"),
    "class body": "import numpy as np\nclass K:\n    dtype = np.float32\n    n = len([1])\n",
    "comprehension": "def f(x):\n    return [abs(v) for v in x if isinstance(v, int)]\n",
    "random generator": "import numpy as np\nrng = np.random.default_rng(0)\nx = rng.integers(3)\n",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_path_out_is_refused_however_it_is_spelled(name: str) -> None:
    assert policy.violations(REFUSED[name], ALLOWED), name


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_legitimate_code_passes(name: str) -> None:
    assert policy.violations(ACCEPTED[name], ALLOWED) == []


def test_the_message_names_the_line_and_the_path() -> None:
    with pytest.raises(policy.PolicyError) as exc:
        policy.check(REFUSED["numba.config.os"], ALLOWED)
    assert "line 3" in str(exc.value) and "numba.config.os" in str(exc.value)


def test_a_name_the_model_invents_is_never_imported_here() -> None:
    import sys
    assert policy.violations("import numba\nnumba.tests.npyufunc\n", ALLOWED)
    assert "numba.tests.npyufunc" not in sys.modules


def test_every_target_kernel_and_playbook_entry_passes() -> None:
    checked = 0
    for folder in sorted(p for p in TARGETS.iterdir() if (p / "kernels.py").is_file()):
        sources = [(folder / "kernels.py").read_text()]
        for entry in sorted((folder / "playbook").glob("*.md")):
            text = entry.read_text()
            if "```python" in text:
                sources.append(text.split("```python\n")[1].split("```")[0])
        for source in sources:
            assert policy.violations(source, ALLOWED) == [], folder.name
            checked += 1
    assert checked >= 10
