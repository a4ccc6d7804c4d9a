import gc

import pytest


@pytest.fixture(autouse=True)
def _gui_thread_garbage_collection(qapp):
    """Collect garbage on the GUI thread, as the program does, and after every test.

    Widgets a test leaves in reference cycles then die here, on the GUI thread,
    rather than inside a later test's training or UMAP thread.
    """
    from app.main_window import collect_garbage_on_gui_thread

    collect_garbage_on_gui_thread()
    yield
    gc.collect()
