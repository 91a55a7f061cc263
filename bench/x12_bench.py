"""X12 split + path cost per transaction: the hand-written reader (engine/x12) against pyx12.

    .venv/bin/python bench/x12_bench.py [--claims 10] [--sets 1] [--runs 15]

Builds a synthetic 835 (``--sets`` transaction sets of ``--claims`` claim payments each; each
claim has two CAS, two NM1, two dates and two service lines with their own CAS) and times, as
medians of ``--runs`` timeit repeats, in µs per transaction set:

- split: ``parse_interchange`` (every envelope check) + ``split_interchange`` (one interchange
  per set, with its metadata): what an ``inbound = "x12"`` source does for each file;
- paths: ``X12View(message.text)`` then five paths (``CLP.1``, ``CLP.4``, ``SVC.1.2``,
  ``NM1(2).3``, ``BPR.2``): what a filter reading a few values costs, the first split included;
- loops: ``view.loops('2100')`` and ``CLP.4`` of each claim (a transform walking every claim);
- 999: ``acknowledge`` of the parsed interchange.

pyx12 (if installed: ``pip install pyx12``) is timed on the same text for what it can do:
``X12Reader`` iterating every segment (its envelope checks) and collecting each set's segments
(its nearest to a split), reading ``CLP04`` of each claim while it walks, and ``x12n_document``:
the full 005010X221A1 validation writing a 999.  Nothing of pyx12 is used by the engine.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import timeit
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from engine.x12 import X12View, acknowledge, parse_interchange, split_interchange, take


def make_835(claims: int, sets: int) -> str:
    """A synthetic 005010X221A1 interchange (invented names, ids and amounts)."""
    isa = ("ISA*00*          *00*          *ZZ*ACMEHEALTH01   *ZZ*HOSPRECEIVER01 *250115*1430*^*"
           "00501*000000101*0*P*:")
    segments = [isa, "GS*HP*ACMEHEALTH01*HOSPRECEIVER01*20250115*1430*101*X*005010X221A1"]
    for s in range(1, sets + 1):
        body = [f"ST*835*{s:04d}",
                (f"BPR*I*{claims * 150}*C*ACH*CCP*01*011000015*DA*123456789*1512345678**01*"
                "071000013*DA*987654321*20250115"),
                f"TRN*1*EFT2025011500{s}*1512345678", "DTM*405*20250114",
                "N1*PR*ACME HEALTH PLAN", "N3*100 INSURANCE WAY", "N4*HARTFORD*CT*06101",
                "REF*2U*99999", "N1*PE*GENERAL HOSPITAL*XX*1234567893", "N3*1 HOSPITAL DRIVE",
                "N4*SPRINGFIELD*IL*62701", "REF*TJ*371234567", "LX*1"]
        for c in range(1, claims + 1):
            body += [f"CLP*ACCT{s:02d}{c:05d}*1*200*150*30*12*CLM{s:02d}{c:08d}*11*1",
                     "CAS*CO*45*20", "CAS*PR*1*30",
                     f"NM1*QC*1*PATIENT{c}*ALEX****MI*W{c:09d}",
                     "NM1*82*1*EXAMPLE*DANA****XX*1234567891",
                     "DTM*232*20250102", "DTM*233*20250102"]
            for code, charge, paid in (("99214", 120, 90), ("80053", 80, 60)):
                body += [f"SVC*HC:{code}*{charge}*{paid}**1", "DTM*472*20250102",
                         f"CAS*CO*45*{charge - paid - 15}", "CAS*PR*1*15", f"AMT*B6*{charge - 5}"]
        body.append(f"SE*{len(body) + 1}*{s:04d}")
        segments += body
    segments += [f"GE*{sets}*101", "IEA*1*000000101"]
    return "".join(s + "~\n" for s in segments)


def median_us(fn, runs: int, per: int) -> float:
    """Median µs of one call of ``fn`` divided by ``per`` (the sets it handles)."""
    number = max(1, int(0.05 / max(timeit.timeit(fn, number=1), 1e-7)))
    times = timeit.repeat(fn, number=number, repeat=runs)
    return statistics.median(times) / number / per * 1e6


def bench_ours(text: str, sets: int, runs: int, claims: int) -> dict[str, float]:
    def do_split():
        return split_interchange(parse_interchange(text))

    messages = do_split()
    message = messages[0].text

    def paths():
        view = X12View(message)
        return (view["CLP.1"], view["CLP.4"], view["SVC.1.2"], view["NM1(2).3"], view["BPR.2"])

    def loops():
        return [claim["CLP.4"] for claim in X12View(message).loops("2100")]

    parsed = parse_interchange(text)
    now = datetime(2025, 1, 16, 9, 30)
    return {
        "split (parse + envelope checks + split)": median_us(do_split, runs, sets),
        "paths (view + 5 paths)": median_us(paths, runs, 1),
        "loops('2100') + CLP.4 per claim": median_us(loops, runs, 1),
        "999 (acknowledge)": median_us(lambda: acknowledge(parsed, now=now), runs, sets),
        "intake per claim (take, claims=True)": median_us(
            lambda: take(text, now=now, claims=True), runs, sets * claims),
    }


def bench_pyx12(text: str, sets: int, runs: int) -> dict[str, float] | None:
    try:
        import pyx12.params
        import pyx12.x12file
        import pyx12.x12n_document
    except ImportError:
        return None
    logging.getLogger("pyx12").setLevel(logging.CRITICAL)

    def do_split():
        out, current = [], None
        for seg in pyx12.x12file.X12Reader(io.StringIO(text)):
            seg_id = seg.get_seg_id()
            if seg_id == "ST":
                current = [seg]
            elif current is not None:
                current.append(seg)
                if seg_id == "SE":
                    out.append("~".join(s.format() for s in current))
                    current = None
        return out

    def values():
        return [seg.get_value("CLP04") for seg in pyx12.x12file.X12Reader(io.StringIO(text))
                if seg.get_seg_id() == "CLP"]

    param = pyx12.params.params()

    def validate():
        pyx12.x12n_document.x12n_document(param, io.StringIO(text), io.StringIO(), None, None)

    return {
        "split (X12Reader walk + per-set text)": median_us(do_split, runs, sets),
        "CLP04 of each claim while walking": median_us(values, runs, sets),
        "x12n_document: full IG validation + 999": median_us(validate, max(3, runs // 5), sets),
    }


def calibration_us(runs: int) -> float | None:
    """``hl7.parse`` of the bench's 1.1 KB ADT: DESIGN §2 measured ~610 µs on a quiet machine,
    so this line says how loaded the machine was while the figures above were taken."""
    try:
        import hl7
        from load_client import BUILTIN_TEMPLATE
    except ImportError:
        return None
    return median_us(lambda: hl7.parse(BUILTIN_TEMPLATE), runs, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=10)
    parser.add_argument("--sets", type=int, default=1)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    text = make_835(args.claims, args.sets)
    assert parse_interchange(text).all_errors() == []
    print(f"835: {args.sets} set(s) of {args.claims} claims, {len(text):,} bytes, "
          f"{text.count('~'):,} segments; median µs per transaction set")
    for name, value in bench_ours(text, args.sets, args.runs, args.claims).items():
        print(f"  engine.x12  {name:<42} {value:>10,.1f}")
    theirs = bench_pyx12(text, args.sets, args.runs)
    if theirs is None:
        print("  pyx12 not installed: pip install pyx12 to compare")
    else:
        for name, value in theirs.items():
            print(f"  pyx12       {name:<42} {value:>10,.1f}")
    calibration = calibration_us(args.runs)
    if calibration is not None:
        label = "hl7.parse of the 1.1 KB ADT (quiet: ~610)"
        print(f"  calibration {label:<42} {calibration:>10,.1f}")


if __name__ == "__main__":
    main()
