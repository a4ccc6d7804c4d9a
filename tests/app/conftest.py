import pytest


@pytest.fixture(autouse=True)
def _gui_thread_garbage_collection(qapp):
    """Collect garbage on the GUI thread, as the program does.

    With automatic collection off, the root conftest collects after every test,
    so widgets a test leaves in reference cycles die then, on the GUI thread,
    rather than inside a later test's training or UMAP thread.
    """
    from app.main_window import collect_garbage_on_gui_thread

    collect_garbage_on_gui_thread()
    yield
