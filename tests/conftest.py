import pytest

from core.openmp import limit_openmp_spinning

limit_openmp_spinning()  # before torch loads: a busy CI core must not stall every test
import torch  # noqa: E402

# The golden vectors were produced with 2 CPU threads; match that for reproducibility.
torch.set_num_threads(2)


@pytest.fixture
def needs_x_server(qapp):
    """Skip unless Qt runs on X (Xvfb): PyVista's QtInteractor segfaults on the offscreen
    platform. GUI test modules use it through ``pytest.mark.usefixtures``."""
    from PySide6.QtGui import QGuiApplication

    if QGuiApplication.platformName() != "xcb":
        pytest.skip(f"3D view needs an X server (platform is {QGuiApplication.platformName()!r})")
