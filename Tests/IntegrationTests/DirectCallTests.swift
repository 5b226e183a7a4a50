import Foundation
import MeshControl
import Testing

/// Direct paths between two home nodes behind NATs (docs/calls.md, "Direct paths"), in `Tools/nat-lab` with real
/// `mesh-node`s: each home node links only to the public node p1, so every call's chain runs through p1, and
/// `Tools/direct-call` places echo calls from home a to home b, sampling p1's relay counters. Needs root; skipped
/// otherwise.
@Suite(.serialized, .enabled(if: geteuid() == 0, "needs root (network namespaces)"))
struct DirectCallTests {
    /// Cone/cone, ten calls of 4 s: at least nine go direct within 2 s of the answer; from a second after that, p1
    /// forwards the caller's chain probes (10 a second) and no media (50 a second); each echo matches the speech
    /// sent.
    @Test func coneToConeMovesMediaOffTheChain() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let (_, document) = try runDirectCall(homes: "cone", scratch: scratch, duration: 4, calls: 10)
        let calls = document.json["calls"]?.arrayValue ?? []
        #expect(calls.count == 10)
        let direct = calls.filter { ($0["summary"]?["direct"]?["msToDirect"]?.doubleValue ?? .infinity) < 2_000 }
        #expect(direct.count >= 9, "\(calls.map { $0["summary"]?["direct"] ?? .null })")
        for (index, call) in calls.enumerated() {
            let context = "call \(index): \(call["summary"]?["direct"] ?? .null); \(mediaFigures(call["summary"]))"
            #expect(call["status"]?.intValue == 0, "\(context): \(call["stderr"] ?? .null)")
            #expect(call["summary"]?["direct"]?["fallbacks"]?.intValue == 0, "\(context)")
            let match = try speechMatch(document.speech, call["record"]?.stringValue ?? "")
            #expect((match["correlation"]?.doubleValue ?? 0) > speechMatchFloor, "\(match); \(context)")
        }
        for call in direct {
            let samples = call["samples"]?.arrayValue ?? []
            let onDirect = samples.filter { $0["state"]?.stringValue == "direct" }
            if let first = onDirect.first?["t"]?.doubleValue,
               let from = onDirect.first(where: { ($0["t"]?.doubleValue ?? 0) >= first + 1 }), let to = onDirect.last,
               let t0 = from["t"]?.doubleValue, let t1 = to["t"]?.doubleValue, t1 - t0 >= 1.5 {
                let rate = Double((to["forward"]?.intValue ?? 0) - (from["forward"]?.intValue ?? 0)) / (t1 - t0)
                #expect(rate < 15, "p1 forwarded \(rate) packets/s toward the callee while the call was direct")
            } else {
                Issue.record("not direct for 2.5 s: \(samples.map { $0["state"]?.stringValue ?? "-" })")
            }
        }
        // The caller's metrics (docs/metrics.md) count the attempts and their successes, and no fallback.
        let metrics = document.json["metrics"]?["a"]
        #expect((metrics?["meshnode_direct_attempts_total"]?.doubleValue ?? 0) >= 10, "\(metrics ?? .null)")
        #expect((metrics?["meshnode_direct_successes_total"]?.doubleValue ?? 0) >= 9, "\(metrics ?? .null)")
        #expect(metrics?["meshnode_direct_fallbacks_total"]?.doubleValue == 0, "\(metrics ?? .null)")
        #expect((metrics?["meshnode_direct_seconds_to_direct_total"]?.doubleValue ?? 0) > 0, "\(metrics ?? .null)")
        // node-ctl info: the time to direct over the calls that got there.
        let times = document.json["info"]?["a"]?["direct"]?["msToDirect"]
        #expect((times?["count"]?.intValue ?? 0) >= 9 && (times?["p50"]?.doubleValue ?? .infinity) < 2_000, "\(times ?? .null)")
        #expect((times?["p50"]?.doubleValue ?? 1) <= (times?["p95"]?.doubleValue ?? 0))
    }

    /// Symmetric/symmetric (no TURN): no direct pair exists; the call stays on the chain with continuous audio.
    @Test func symmetricToSymmetricStaysOnTheChain() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let (call, document) = try runDirectCall(homes: "symmetric", scratch: scratch)
        let direct = call["summary"]?["direct"]
        #expect(call["status"]?.intValue == 0, "\(call["stderr"] ?? .null)")
        #expect(direct?["msDirect"]?.doubleValue == 0 && direct?["msToDirect"] == nil, "\(direct ?? .null)")
        #expect((direct?["attempts"]?.intValue ?? 0) >= 1, "\(direct ?? .null)")
        let match = try speechMatch(document.speech, call["record"]?.stringValue ?? "")
        #expect((match["correlation"]?.doubleValue ?? 0) > speechMatchFloor, "\(match); \(mediaFigures(call["summary"]))")
        let gap = call["longestGapMs"]?.doubleValue ?? .infinity
        #expect(gap < 1_000, "longest gap \(gap) ms")
    }

    /// Symmetric/symmetric with a TURN server configured on both nodes (coturn in the lab): the call leaves the chain
    /// for a pair of relayed candidates within 2 s of the answer, and the echo matches the speech.
    @Test func symmetricToSymmetricGoesDirectThroughAConfiguredTURNServer() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let (call, document) = try runDirectCall(homes: "symmetric", scratch: scratch, turn: true)
        let direct = call["summary"]?["direct"]
        let context = "\(direct ?? .null); \(mediaFigures(call["summary"]))"
        #expect(call["status"]?.intValue == 0, "\(call["stderr"] ?? .null)")
        #expect((direct?["msToDirect"]?.doubleValue ?? .infinity) < 2_000 && direct?["fallbacks"]?.intValue == 0, "\(context)")
        let pair = [direct?["local"]?.stringValue ?? "", direct?["remote"]?.stringValue ?? ""]
        #expect(pair.contains { $0.hasPrefix("relay") }, "a relayed candidate in the pair: \(pair)")
        let match = try speechMatch(document.speech, call["record"]?.stringValue ?? "")
        #expect((match["correlation"]?.doubleValue ?? 0) > speechMatchFloor, "\(match); \(context)")
    }

    /// The direct path cut mid-call in one direction (b to a dropped at a's host): a notices within 400 ms, both
    /// ends go back to the chain (b told over it), and the echo's longest gap stays under a second. The cut is
    /// lifted at 4 s: the caller tries again after its 5 s backoff and media goes direct again, the echo still
    /// without a gap of a second.
    @Test func aCutDirectPathFallsBackToTheChainWithinASecondAndIsRetriedAfterTheBackoff() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let (call, document) = try runDirectCall(homes: "cone", scratch: scratch, cutAt: 2.5, restoreAt: 4, duration: 11)
        let direct = call["summary"]?["direct"]
        let context = "\(direct ?? .null); \(mediaFigures(call["summary"]))"
        #expect(call["status"]?.intValue == 0, "\(call["stderr"] ?? .null)")
        #expect(direct?["fallbacks"]?.intValue == 1 && direct?["attempts"]?.intValue == 2, "\(context)")
        #expect((direct?["msDirect"]?.doubleValue ?? 0) > 3_000, "direct before the cut and again after the retry: \(context)")
        for node in ["a", "b"] {
            #expect(document.json["info"]?[node]?["nodeCounters"]?["directFallbacks"]?.intValue == 1, "\(node)")
        }
        // a's view, sampled every 50 ms: direct, back on the chain at the cut, direct again 5 s after the fallback.
        let states = (call["samples"]?.arrayValue ?? []).compactMap { s in s["state"]?.stringValue.map { (s["t"]?.doubleValue ?? 0, $0) } }
        let fellBack = states.drop { $0.1 != "direct" }.first { $0.1 != "direct" }
        let back = fellBack.flatMap { f in states.first { $0.0 > f.0 && $0.1 == "direct" } }
        #expect(fellBack.map { $0.0 >= 2.5 && $0.0 < 3.5 } == true, "fallback at \(fellBack.map { "\($0.0) s" } ?? "-")")
        let retryAfter = fellBack.flatMap { f in back.map { $0.0 - f.0 } }
        #expect(retryAfter.map { (4.5...7).contains($0) } == true, "direct again \(retryAfter.map { "\($0) s" } ?? "never") after the fallback")
        let gap = call["longestGapMs"]?.doubleValue ?? .infinity
        #expect(gap < 1_000, "longest gap \(gap) ms: \(context)")
        let match = try speechMatch(document.speech, call["record"]?.stringValue ?? "")
        #expect((match["correlation"]?.doubleValue ?? 0) > speechMatchFloor, "\(match); \(context)")
    }
}

/// What `Tools/direct-call` wrote, and where its spoken sample is.
struct DirectCallDocument {
    let json: JSONValue
    let speech: String
}

/// Runs `Tools/direct-call` echo calls (one of 6 s unless told) in a nat-lab with homes a and b behind NATs of kind
/// `homes`, and returns the first call's entry and the whole document. nat-lab removes its namespaces and processes
/// however it ends.
func runDirectCall(homes: String, scratch: Scratch, cutAt: Double? = nil, restoreAt: Double? = nil,
                   duration: Double = 6, calls: Int = 1, turn: Bool = false) throws -> (JSONValue, DirectCallDocument) {
    let out = scratch.file("direct.json")
    var command = [directCallPath, "--bin-dir", Binaries.directory, "--out", out, "--duration", String(duration),
                   "--calls", String(calls)]
    if let cutAt { command += ["--cut-at", String(cutAt)] }
    if let restoreAt { command += ["--restore-at", String(restoreAt)] }
    if turn { command.append("--turn") }
    // The lab's own bound, then this process's: the calls, their set-up, the lab's.
    let labTimeout = max(60, 40 + Double(calls) * (duration + 5))
    let arguments = ["--public", "1", "--mesh-nodes", "--bin-dir", Binaries.directory, "--home", "a:\(homes)",
                     "--home", "b:\(homes)", "--timeout", String(Int(labTimeout))] + (turn ? ["--turn"] : []) + ["--"] + command
    let run = try runCommand(natLabPath, arguments, timeout: labTimeout + 30, stopGrace: 10, recordTimeout: false)
    guard let text = try? String(contentsOfFile: out, encoding: .utf8), let document = try? decodeJSON(text) else {
        throw HarnessError("direct-call wrote nothing (nat-lab exit \(run.status)): \(run.stderr.suffix(2_000))")
    }
    guard document["error"] == nil || document["error"] == .null, let call = document["calls"]?.arrayValue?.first else {
        throw HarnessError("direct-call: \(document["error"]?.stringValue ?? "no call"); logs: \(document["logs"] ?? .null)")
    }
    return (call, DirectCallDocument(json: document, speech: document["speech"]?.stringValue ?? ""))
}

/// The repository's `Tools/direct-call`.
let directCallPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Tools/direct-call").path
