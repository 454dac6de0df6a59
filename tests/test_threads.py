import threading

import torch

import tal.ops.threads as threads
from tal.ops.threads import single_threaded


@single_threaded
def seen_threads() -> int:
    return torch.get_num_threads()


@single_threaded
def nested() -> tuple[int, int]:
    return torch.get_num_threads(), seen_threads()


def test_post_processing_runs_on_one_thread_and_restores_the_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert seen_threads() == 1
        assert nested() == (1, 1)
        assert torch.get_num_threads() == 2
        threads.POSTPROCESS_THREADS = None
        assert seen_threads() == 2
    finally:
        threads.POSTPROCESS_THREADS = 1
        torch.set_num_threads(before)


def test_overlapping_calls_from_two_python_threads_keep_their_own_settings():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    entered, release = threading.Event(), threading.Event()

    @single_threaded
    def wait() -> int:
        entered.set()
        release.wait(5)
        return torch.get_num_threads()

    results = []
    worker = threading.Thread(target=lambda: results.append(wait()))
    try:
        worker.start()
        entered.wait(5)
        assert seen_threads() == 1  # starts and ends while the worker's call is still running
        assert torch.get_num_threads() == 2  # this thread's setting, whatever the worker does
        release.set()
        worker.join(5)
        assert results == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
