"""The core's geometry and size checks under AddressSanitizer + UBSan, fed extreme geometry.

bnn_geomcheck (native/tests/geomcheck.cpp) validates each case and runs the small valid ones on
every instruction set against a naive reference. Here every answer is compared with ``expected``,
an independent statement of the rules in ``ConvShape::validate``: every case whose buffers would
exceed the core's limit is refused with a message giving the size, every valid case is accepted,
no accepted case disagrees with the reference, and the driver exits cleanly (no sanitizer report,
no leak) after all of them.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FIELDS = ("N", "C", "H", "W", "O", "KH", "KW", "sh", "sw", "ph", "pw", "dh", "dw", "pad_value")
# Plausible values per field; a fuzzed case replaces a few of them with extreme ones.
SMALL = ((1, 2), (1, 130), (1, 12), (1, 12), (1, 20), (1, 4), (1, 4), (1, 3), (1, 3), (0, 3), (0, 3), (1, 3), (1, 3),
         (-1, 1))
EXTREMES = (0, -1, 2, 63, 64, 65, 4095, 11584, 11585, 23170, 46341, 65536, 2**20, 2**20 + 1, 2**24, 2**24 + 1,
            2**31 - 1, 2**31, 2**32, 2**40, 2**40 + 1, 2**62, INT64_MAX, INT64_MIN, -(2**31))


@dataclass(frozen=True)
class Limits:
    max_buffer_bytes: int
    max_geometry: int
    max_elements: int


def _out_size(padded: int, dilated_kernel: int, stride: int) -> int:
    return 0 if padded < dilated_kernel else (padded - dilated_kernel) // stride + 1


def expected(case: tuple[int, ...], limits: Limits) -> str:
    """'accepted', 'rejected', or 'too large' (rejected for a buffer over the limit), by the
    rules of ConvShape::validate, in its order, in exact integer arithmetic."""
    n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, pad_value = case
    if not all(1 <= v <= limits.max_elements for v in (n, c, h, w, o, kh, kw)):
        return "rejected"
    if not all(1 <= v <= limits.max_geometry for v in (sh, sw, dh, dw)):
        return "rejected"
    if not all(0 <= v <= limits.max_geometry for v in (ph, pw)) or pad_value not in (-1, 0, 1):
        return "rejected"
    k_total = c * kh * kw
    if n * c * h * w > limits.max_elements or o * k_total > limits.max_elements or k_total > 2**24:
        return "rejected"
    oh = _out_size(h + 2 * ph, dh * (kh - 1) + 1, sh)
    ow = _out_size(w + 2 * pw, dw * (kw - 1) + 1, sw)
    if oh < 1 or ow < 1 or n * o * oh * ow > limits.max_elements:
        return "rejected"
    words, o_padded = math.ceil(c / 64), math.ceil(o / 16) * 16
    buffers = [n * (h + 2 * ph) * (w + 2 * pw) * words * 8, n * o * oh * ow * 4, o_padded * kh * kw * words * 8]
    if pad_value != 1 and (ph > 0 or pw > 0):
        buffers.append(o_padded * min(oh, 2 * kh + 1) * min(ow, 2 * kw + 1) * 4)
    return "too large" if max(buffers) > limits.max_buffer_bytes else "accepted"


class GeomCheck:
    """One bnn_geomcheck process, answering batches of cases."""

    def __init__(self, binary: Path, env: dict[str, str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("w")
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, env=env)
        first = self._readline()
        fields = dict(item.split("=") for item in first.split()[1:])
        self.limits = Limits(*(int(fields[k]) for k in ("max_buffer_bytes", "max_geometry", "max_elements")))

    def _readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"bnn_geomcheck died (exit {self.proc.poll()}):\n{self.stderr_path.read_text()[-4000:]}"
        return line.rstrip("\n")

    def answers(self, cases: list[tuple[int, ...]]) -> list[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(" ".join(map(str, case)) + "\n" for case in cases))
        self.proc.stdin.flush()
        return [self._readline() for _ in cases]

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(timeout=60)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()
        return code


@pytest.fixture(scope="module")
def geomcheck(sanitizer_build: Path, sanitizer_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    driver = GeomCheck(sanitizer_build / "bnn_geomcheck", sanitizer_env, tmp_path_factory.mktemp("geom") / "stderr")
    yield driver
    code = driver.close()
    assert code == 0, f"bnn_geomcheck exited {code}:\n{driver.stderr_path.read_text()[-4000:]}"


def check_answer(case: tuple[int, ...], answer: str, limits: Limits) -> str:
    want = expected(case, limits)
    assert not answer.startswith("mismatch"), answer
    if want == "accepted":
        assert answer in ("ok", "valid"), f"{dict(zip(FIELDS, case))}: {answer}"
    else:
        assert answer.startswith("rejected "), f"{dict(zip(FIELDS, case))} should be {want}: {answer}"
        if want == "too large":
            assert "bytes" in answer and str(limits.max_buffer_bytes) in answer, answer
    return want


@st.composite
def plausible_with_extremes(draw) -> tuple[int, ...]:
    case = [draw(st.integers(lo, hi)) for lo, hi in SMALL]
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.integers(0, len(FIELDS) - 1))
        case[field] = draw(st.one_of(st.sampled_from(EXTREMES), st.integers(INT64_MIN, INT64_MAX),
                                     st.integers(2**10, 2**17)))
    return tuple(case)


def log_uniform(max_exponent: int) -> st.SearchStrategy[int]:
    return st.integers(0, max_exponent).flatmap(lambda e: st.integers(2**e, 2 ** (e + 1) - 1))


@st.composite
def near_the_limit(draw) -> tuple[int, ...]:
    """Valid-looking geometry whose buffers fall on either side of the size limit."""
    n, c, h, w, o = draw(log_uniform(6)), draw(log_uniform(12)), draw(log_uniform(16)), draw(log_uniform(16)), draw(log_uniform(12))
    kh, kw, sh, sw, dh, dw = (draw(st.integers(1, 4)) for _ in range(6))
    ph, pw = (draw(st.one_of(st.just(0), log_uniform(16))) for _ in range(2))
    return (n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, draw(st.integers(-1, 1)))


geometry = st.one_of(plausible_with_extremes(), near_the_limit())


@pytest.mark.slow
@settings(derandomize=True, database=None, max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(geometry, min_size=10, max_size=10))
def test_extreme_geometry_is_refused_or_exact(geomcheck: GeomCheck, batch: list[tuple[int, ...]]):
    for case, answer in zip(batch, geomcheck.answers(batch)):
        check_answer(case, answer, geomcheck.limits)


@pytest.mark.slow
def test_known_cases(geomcheck: GeomCheck):
    one = (1, 1, 1, 1, 1, 1, 1, 1, 1)
    cases = {
        # the padding of a tiny request alone asks for 137 GB, or just over 4 GiB
        (*one[:7], 1, 1, 65536, 65536, 1, 1, 0): "too large",
        (*one[:7], 1, 1, 11585, 11585, 1, 1, 0): "too large",
        (*one[:7], 1, 1, 11584, 11584, 1, 1, 0): "accepted",
        (*one[:7], 1, 1, 2**20 + 1, 0, 1, 1, 0): "rejected",
        (*one[:7], INT64_MAX, 1, 0, 0, 1, 1, 0): "rejected",
        (2**40, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0): "too large",
        (1, 2**24, 1, 1, 1, 2, 1, 1, 1, 1, 0, 1, 1, 0): "rejected",
        (1, 1, 3, 3, 1, 2, 2, 1, 1, 0, 0, 2**20, 1, 0): "rejected",
        # a 2^24-tap kernel with the most padding: valid (2 GiB of packed weights), too large to run
        (1, 1, 2**24, 1, 1, 2**24, 1, 1, 1, 2**20, 0, 1, 1, 0): "accepted",
        (2, 70, 9, 11, 20, 3, 3, 2, 1, 1, 2, 2, 1, -1): "accepted",
        (1, 130, 12, 12, 17, 4, 4, 1, 3, 3, 3, 3, 1, 0): "accepted",
    }
    answers = geomcheck.answers(list(cases))
    for (case, want), answer in zip(cases.items(), answers):
        assert check_answer(case, answer, geomcheck.limits) == want, (case, answer)
    assert answers[-2:] == ["ok", "ok"]
