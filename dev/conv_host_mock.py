"""Host time of our conv wrappers without a GPU: conv2d_backward(need_dx=False) (the harness's backward_weights
row) with CuPy replaced by a stub whose kernel launches do nothing, so what is timed is our Python per eager
call on top of the launches themselves (each a real CuPy launch costs ~8-25 us more on the GPU machine).

    python3 dev/conv_host_mock.py               # per-call host time of the small layers of the conv suite
    python3 dev/conv_host_mock.py --profile [N,C,H,W,K,R,S,stride,pad]   # plus cProfile's top functions

Run from the repository root on a machine without CuPy (the stub must be the only ``cupy``).
"""
import sys, types, time, itertools
import numpy as np
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.dirname(__import__('os').path.abspath(__file__))))

cp = types.ModuleType('cupy')
_ptr = itertools.count(1 << 20, 1 << 20)
class _Flags: c_contiguous = True
class _Data:
    def __init__(s, p): s.ptr = p
class ndarray:
    def __init__(s, shape, dtype=np.float32):
        s.shape = tuple(int(v) for v in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        s.dtype = np.dtype(dtype); s.flags = _Flags(); s.ndim = len(s.shape)
        s.size = int(np.prod(s.shape)); s.data = _Data(next(_ptr) * 256)
cp.ndarray = ndarray
cp.empty = lambda shape, dtype=np.float32: ndarray(shape, dtype)
cp.zeros = cp.empty
cp.full = lambda shape, v, dtype=np.float32: ndarray(shape, dtype)
class _Dev:
    def __init__(s, i=0): s.id = 0; s.attributes = {"MultiProcessorCount": 132}
    def synchronize(s): pass
class _Stream: ptr = 0
cuda = types.SimpleNamespace(Device=_Dev, get_current_stream=lambda: _Stream(),
                             runtime=types.SimpleNamespace(streamIsCapturing=lambda p: 0))
cp.cuda = cuda
sys.modules['cupy'] = cp

launches = [0]
class FakeKernel:
    max_dynamic_shared_size_bytes = 0
    def __call__(self, grid, block, args, shared_mem=0):
        launches[0] += 1
from custom_impl.gpu import _compile
_compile._module = lambda family, dev, defines: types.SimpleNamespace(get_function=lambda name: FakeKernel())
from custom_impl.gpu import conv, conv_smallc, gemm

for shape, version in [((256, 1, 28, 28, 32, 5, 5, 1, 2), "smallc"), ((33, 17, 29, 31, 45, 3, 3, 1, 1), "v2"),
                       ((256, 3, 32, 32, 32, 3, 3, 1, 1), "smallc")]:
    N, C, H, W, K, R, S, st, pad = shape
    x, w = cp.empty((N, C, H, W)), cp.empty((K, C, R, S))
    dims = conv._dims(x.shape, w.shape, (st, st), (pad, pad))
    dy = cp.empty((N, K, dims[7], dims[8]))
    dW, db = cp.empty(w.shape), cp.empty((K,))
    size = conv.conv2d_workspace_size(x.shape, w.shape, (st, st), (pad, pad))
    ws = cp.empty((size,)) if size else None
    conv._choices[("weights", 0, dims)] = version
    call = lambda: conv.conv2d_backward(dy, x, w, (st, st), (pad, pad), need_dx=False, dW=dW, db=db, workspace=ws)
    for _ in range(200): call()
    launches[0] = 0
    n = 4000
    best = 1e9
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(n): call()
        best = min(best, (time.perf_counter() - t) / n)
    dt = best; n *= 7
    print(f"{shape} {version}: {dt*1e6:.1f} us of Python per call, {launches[0]/n:.0f} launches (mocked, free)")

import sys as _s
if "--profile" not in _s.argv: _s.exit(0)
import cProfile, pstats
shape = tuple(int(v) for v in _s.argv[2].split(",")) if len(_s.argv) > 2 else (256, 1, 28, 28, 32, 5, 5, 1, 2)
N, C, H, W, K, R, S, st, pad = shape
x, w = cp.empty((N, C, H, W)), cp.empty((K, C, R, S))
dims = conv._dims(x.shape, w.shape, (st, st), (pad, pad))
dy = cp.empty((N, K, dims[7], dims[8])); dW, db = cp.empty(w.shape), cp.empty((K,))
ws = cp.empty((conv.conv2d_workspace_size(x.shape, w.shape, (st, st), (pad, pad)),))
pr = cProfile.Profile(); pr.enable()
for _ in range(5000): conv.conv2d_backward(dy, x, w, (st, st), (pad, pad), need_dx=False, dW=dW, db=db, workspace=ws)
pr.disable()
pstats.Stats(pr).sort_stats('tottime').print_stats(18)
