"""The media benchmark's measuring half; run it through Tools/bench-media, which prepares the environment."""
import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np
from pesq import pesq
from scipy.io import wavfile
from scipy.signal import resample_poly

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 48_000
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
]
TRACES = ["clean", "jitter", "bursty", "random-loss", "spikes", "reorder", "drift-plus", "drift-minus"]
PLAYOUTS = ["adaptive", "fixed:60", "fixed:120"]
CURVE_RUNS = ([("adaptive", []), ("adaptive", ["--redundancy", "off"])]
              + [(f"fixed:{ms}", []) for ms in range(0, 141, 20)])
WINDOW_S = 8


def windows(seconds):
    """The starts of the 8 s PESQ windows over a trace of `seconds` (from 8 s, a margin left at the end)."""
    return list(range(8, int(seconds) - WINDOW_S - 2, WINDOW_S))


def sentences(work):
    """The six sentences from espeak-ng at 48 kHz."""
    spoken = []
    for i, text in enumerate(SENTENCES):
        path = os.path.join(work, f"s{i}.wav")
        subprocess.run(["espeak-ng", "-w", path, text], check=True)
        rate, pcm = wavfile.read(path)
        spoken.append(resample_poly(pcm.astype(np.float64), RATE, rate))
    return spoken


def speech(work, name="speech", conversation=False, noise_db=-55):
    """The sentences over a room's noise (white noise at `noise_db` dBFS: -55 a quiet room), 48 kHz. A monologue
    pauses 0.8-1.6 s after each sentence; one side of a conversation pauses while the other side says a
    sentence of the same set (the next one) with 0.3-0.6 s between turns."""
    rng = np.random.default_rng(7)
    spoken = sentences(work)
    parts = []
    for i, pcm in enumerate(spoken):
        parts.append(pcm)
        if conversation:
            other = spoken[(i + 1) % len(spoken)].size / RATE
            parts.append(np.zeros(int(RATE * (other + rng.uniform(0.3, 0.6) + rng.uniform(0.3, 0.6)))))
        else:
            parts.append(np.zeros(int(RATE * rng.uniform(0.8, 1.6))))
    clean = np.concatenate(parts)
    noisy = clean + rng.normal(0, 32768 * 10 ** (noise_db / 20), clean.size)
    path = os.path.join(work, f"{name}.wav")
    wavfile.write(path, RATE, np.clip(noisy, -32768, 32767).astype(np.int16))
    talk = sum(p.size for p in spoken) / clean.size
    return path, noisy, talk


def lab(trace, speech_path, out, playout, *extra):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([os.environ["MESH_NODE"], "media-lab", "--trace", trace, "--input", speech_path,
                             "--output", out, "--playout", playout, "--json", *extra],
                            check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(result.stdout)
    report["cpuSeconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return report


def align(ref, deg, start, max_lag):
    """The lag (samples, 0...max_lag) at which `deg` best matches `ref[start:start+n]`, and the correlation."""
    n = WINDOW_S * RATE
    a = ref[start:start + n]
    b = deg[start:start + n + max_lag]
    if a.size < n or b.size < n + max_lag:
        return None, 0.0
    a4, b4 = a[::4], b[::4]
    corr = np.correlate(b4, a4, mode="valid")
    lag = int(np.argmax(corr)) * 4
    seg = b[lag:lag + n]
    c = float(np.corrcoef(a, seg)[0, 1]) if np.std(seg) > 0 else 0.0
    return lag, c


def score(reference, output_path, trace_s, starts):
    """PESQ-WB (16 kHz) over 8 s windows, each aligned by cross-correlation; and the mean correlation."""
    _, deg = wavfile.read(output_path)
    deg = deg.astype(np.float64)
    reps = int(np.ceil(trace_s * RATE / reference.size)) + 1
    ref = np.tile(reference, reps)[: int(trace_s * RATE)]
    scores, corrs, failures = [], [], []
    for start_s in starts:
        lag, c = align(ref, deg, int(start_s * RATE), RATE)
        if lag is None:
            continue
        corrs.append(c)
        a = resample_poly(ref[int(start_s * RATE):][: WINDOW_S * RATE], 1, 3)
        b = resample_poly(deg[int(start_s * RATE) + lag:][: WINDOW_S * RATE], 1, 3)
        try:
            scores.append(pesq(16000, a, b, "wb"))
        except Exception as error:  # PESQ refuses some windows (no utterance found)
            failures.append(type(error).__name__)
    return (float(np.mean(scores)) if scores else None,
            float(np.mean(corrs)) if corrs else 0.0, failures)


def curve(work, traces, speech_path, reference):
    """PESQ-WB against mouth-to-ear delay on each trace: adaptive playout (with and without redundant copies) and
    fixed buffers of 0-140 ms."""
    print("| trace | playout | mouth-to-ear ms | late loss % | concealment % | FEC | copies | PESQ-WB |")
    print("|---|---|---|---|---|---|---|---|")
    for trace in traces:
        for playout, extra in CURVE_RUNS:
            out = os.path.join(work, f"curve-{trace}-{playout.replace(':', '')}{''.join(extra)}.wav")
            report = lab(os.path.join(work, f"{trace}.csv"), speech_path, out, playout, *extra)
            seconds = report["traceSeconds"]
            mos = score(reference, out, seconds, windows(seconds))[0]
            r = report["receiver"]
            print(f"| {trace} | {' '.join([playout, *extra])} | {report['mouthToEarMs']:.1f} | "
                  f"{r['lateLossPercent']:.2f} | {r['concealmentPercent']:.2f} | {r['fecRecovered']} | "
                  f"{r['redundancyRecovered']} | "
                  f"{'%.2f' % mos if mos is not None else 'n/a'} |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--curve", nargs="+", metavar="TRACE")
    args = parser.parse_args()
    work = args.work
    minutes = 2 if args.quick else 10
    subprocess.run([os.path.join(ROOT, "Tools", "make-traces"), "--out", work, "--drift-minutes", str(minutes)],
                   check=True, stdout=subprocess.DEVNULL)
    speech_path, reference, talk = speech(work)
    if args.curve:
        return curve(work, args.curve, speech_path, reference)
    rows, results = [], {}
    for trace in TRACES:
        path = os.path.join(work, f"{trace}.csv")
        for playout in PLAYOUTS:
            out = os.path.join(work, f"{trace}-{playout.replace(':', '')}.wav")
            report = lab(path, speech_path, out, playout)
            seconds = report["traceSeconds"]
            if trace.startswith("drift"):  # minute 1 and the last minute
                starts = [60 + 8 * i for i in range(6)] + [seconds - 60 + 8 * i for i in range(6)]
            else:
                starts = windows(seconds)
            mos, corr, failures = score(reference, out, seconds, starts)
            report.update(pesq=mos, correlation=corr, pesqFailures=failures)
            results[(trace, playout)] = report
            r = report["receiver"]
            rows.append(f"| {trace} | {playout} | {r['meanPlayoutDelayMs']:.1f} | {r['p95PlayoutDelayMs']:.0f} | "
                        f"{r['lateLossPercent']:.2f} | {r['concealmentPercent']:.2f} | {r['timeStretchPercent']:.2f} | "
                        f"{'%.2f' % mos if mos is not None else 'n/a'} | {corr:.3f} |")
            print(f"{trace} {playout} done", file=sys.stderr)
    print(f"Speech: {len(SENTENCES)} espeak-ng sentences with pauses over -55 dBFS noise, "
          f"{reference.size / RATE:.1f} s ({100 * talk:.0f} % talk), repeated over each trace; profile normal "
          f"(24 kbit/s, FEC, DTX, redundancy auto).\n")
    print("| trace | playout | mean delay ms | p95 ms | late loss % | concealment % | time-stretch % | PESQ-WB | corr |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))

    def r(t, p):
        return results[(t, p)]["receiver"]
    print("\nTargets:")
    for trace in ["jitter", "spikes"]:
        a, f = r(trace, "adaptive"), r(trace, "fixed:120")
        ratio = a["meanPlayoutDelayMs"] / f["meanPlayoutDelayMs"]
        ok = ratio <= 0.7 and a["lateLossPercent"] <= f["lateLossPercent"]
        print(f"- {trace}: adaptive mean delay {a['meanPlayoutDelayMs']:.1f} ms = {ratio:.2f} x fixed-120 "
              f"({f['meanPlayoutDelayMs']:.1f} ms); late loss {a['lateLossPercent']:.2f} % vs "
              f"{f['lateLossPercent']:.2f} %: {'met' if ok else 'MISSED'}")
    clean = r("clean", "adaptive")["meanPlayoutDelayMs"]
    print(f"- clean: adaptive mean delay {clean:.1f} ms (target <= 40): {'met' if clean <= 40 else 'MISSED'}")
    for trace in ["drift-plus", "drift-minus"]:
        rep = results[(trace, "adaptive")]
        by = rep["playoutDelayByMinuteMs"]
        first, last = by[0], by[minutes - 1]
        ppm = rep["receiver"].get("driftPpm")
        skew = f"estimated skew {ppm:+.0f} ppm" if ppm is not None else "skew unknown"
        print(f"- {trace}: mean delay minute 1 {first:.1f} ms, minute {minutes} {last:.1f} ms (difference "
              f"{abs(last - first):.1f}, target <= 20): {'met' if abs(last - first) <= 20 else 'MISSED'}; {skew}")
    lossy, lossless = results[("bursty", "adaptive")], results[("clean", "adaptive")]
    if lossy["pesq"] is not None and lossless["pesq"] is not None:
        gap = lossless["pesq"] - lossy["pesq"]
        print(f"- bursty ({lossy['receiver']['packetsLost'] / lossy['packetsSent'] * 100:.1f} % of packets sent lost, "
              f"24 kbit/s, FEC): "
              f"PESQ-WB {lossy['pesq']:.2f} vs loss-free {lossless['pesq']:.2f} (gap {gap:.2f}, target <= 0.3): "
              f"{'met' if gap <= 0.3 else 'MISSED'}; FEC recoveries {lossy['receiver']['fecRecovered']}, "
              f"redundant copies played {lossy['receiver']['redundancyRecovered']}, "
              f"{lossy['packetsWithRedundancy']} of {lossy['packetsSent']} packets carried a copy, payload "
              f"{lossy['payloadKbps']:.1f} kbit/s (loss-free run: {lossless['payloadKbps']:.1f}); "
              f"adaptive mean delay {lossy['receiver']['meanPlayoutDelayMs']:.1f} ms")
        fec_only = lab(os.path.join(work, "bursty.csv"), speech_path, os.path.join(work, "bursty-fec.wav"), "adaptive",
                       "--redundancy", "off")
        fec_mos = score(reference, os.path.join(work, "bursty-fec.wav"), fec_only["traceSeconds"],
                        windows(fec_only["traceSeconds"]))[0]
        print(f"- bursty with FEC alone (--redundancy off): PESQ-WB {fec_mos:.2f} (gap {lossless['pesq'] - fec_mos:.2f})")
    clean_path = os.path.join(work, "clean.csv")
    dialogue_path, _, dialogue_talk = speech(work, "conversation", conversation=True)
    noisy_path, _, _ = speech(work, "noisy", noise_db=-35)
    for label, path, share in [("monologue", speech_path, talk),
                               ("one side of a conversation", dialogue_path, dialogue_talk),
                               ("monologue in a noisy room (-35 dBFS)", noisy_path, talk)]:
        counts = {}
        for mode, extra in [("none", ["--no-dtx"]), ("opus", []), ("vad", ["--vad"])]:
            counts[mode] = lab(clean_path, path, os.path.join(work, f"dtx-{mode}.wav"), "adaptive", *extra)["packetsSent"]
        fewer = {mode: 100 * (1 - counts[mode] / counts["none"]) for mode in ("opus", "vad")}
        print(f"- DTX, {label} ({100 * share:.0f} % talk): {counts['opus']} packets with Opus DTX (default) and "
              f"{counts['vad']} with VAD-driven DTX (--vad) vs {counts['none']} without DTX: {fewer['opus']:.0f} % / "
              f"{fewer['vad']:.0f} % fewer (target >= 40): default {'met' if fewer['opus'] >= 40 else 'MISSED'}, "
              f"--vad {'met' if fewer['vad'] >= 40 else 'MISSED'}")
    vad_clean = lab(clean_path, speech_path, os.path.join(work, "clean-vad.wav"), "adaptive", "--vad")
    vad_bursty = lab(os.path.join(work, "bursty.csv"), speech_path, os.path.join(work, "bursty-vad.wav"), "adaptive",
                     "--vad")
    starts = windows(vad_clean["traceSeconds"])
    clean_mos = score(reference, os.path.join(work, "clean-vad.wav"), vad_clean["traceSeconds"], starts)[0]
    bursty_mos = score(reference, os.path.join(work, "bursty-vad.wav"), vad_bursty["traceSeconds"], starts)[0]
    print(f"- VAD-driven DTX quality: PESQ-WB {clean_mos:.2f} clean, {bursty_mos:.2f} bursty "
          f"(Opus DTX: {results[('clean', 'adaptive')]['pesq']:.2f} / {results[('bursty', 'adaptive')]['pesq']:.2f})")
    _, out = wavfile.read(os.path.join(work, "clean-adaptive.wav"))
    frames = out[: out.size // 960 * 960].astype(np.float64).reshape(-1, 960)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    sounding = np.nonzero(rms)[0]
    call = rms[sounding[0]:sounding[-1] + 1] if sounding.size else rms[:0]  # from the first packet to the last
    floor_db = 20 * np.log10(np.percentile(call[call > 0], 10) / 32768) if sounding.size else float("-inf")
    silent = int((call == 0).sum())
    print(f"- Comfort noise (monologue, clean): {results[('clean', 'adaptive')]['receiver']['dtxPercent']:.0f} % "
          f"of playout, quietest 10 % of frames at {floor_db:.0f} dBFS (input noise floor -55 dBFS); "
          f"{silent} of {call.size} frames of the call are digital silence")
    long = results[("drift-plus", "adaptive")]
    cpu = 100 * long["cpuSeconds"] / long["traceSeconds"]
    print(f"- CPU: encode + playout + decode of {long['traceSeconds']:.0f} s took {long['cpuSeconds']:.2f} s "
          f"= {cpu:.2f} % of one core at complexity 5 (target <= 3): {'met' if cpu <= 3 else 'MISSED'}")
    failed = [(t, p, rep["pesqFailures"]) for (t, p), rep in results.items() if rep["pesqFailures"]]
    for t, p, f in failed:
        print(f"- PESQ could not judge {len(f)} window(s) of {t} {p} ({', '.join(sorted(set(f)))}); corr shown")


if __name__ == "__main__":
    main()
