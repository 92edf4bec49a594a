"""kubesim: a Kubernetes API emulator on 127.0.0.1 for the collection's tests.

See README.md beside this file. Typical use::

    from kubesim import KubeSim
    sim = KubeSim(data_dir).start()
    sim.write_kubeconfig(path)
    ...
    sim.stop()
"""

from .controllers import DRIVER, ScaleEvent, copy_tree
from .faults import Faults
from .server import KubeSim
from .util import ApiError

__all__ = ["KubeSim", "Faults", "ScaleEvent", "ApiError", "DRIVER", "copy_tree"]
