"""A command run as a child process, timed: wall seconds and the CPU seconds (user and system, every thread) it
used, read from the children's resource usage."""
import resource
import subprocess
import time


def child_timed(command: list[str], **options) -> tuple[subprocess.CompletedProcess, float, float]:
    """``subprocess.run(command, **options)``, its wall seconds and its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    finished = subprocess.run(command, **options)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return finished, seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
