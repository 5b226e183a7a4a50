import Foundation
import MeshControl
import Testing

/// `Tools/mesh-lab`: real nodes in network namespaces of their own, linked only along a topology's edges
/// (docs/mesh-lab.md). Needs root, as the other namespace tests do.
@Suite(.serialized) struct MeshLabTests {
    /// A line a–b–c–d–e where each node can exchange datagrams with its neighbours only: a calls e's wallet (found
    /// through links: the DHT cannot reach past a neighbour here) over the chain b > c > d > e; the echo matches the
    /// speech sent, and b, c and d each carry the call as a relay session.
    @Test func aCallCrossesALineOfFiveNodes() throws {
        let lab = try runMeshLab(["line", "5", "--step", "call a e 8 &", "--step", "sleep 4", "--step", "sessions b",
                                  "--step", "sessions c", "--step", "sessions d", "--step", "wait-calls"], timeout: 180)
        let nodes = lab["nodes"]?.arrayValue ?? []
        #expect(nodes.first?["neighbours"]?.arrayValue?.compactMap(\.stringValue) == ["b"])
        let call = try meshLabStep(lab, "call a e 8 &")
        let context = "\(call["endReason"]?.stringValue ?? "-"), \(call["error"]?.stringValue ?? ""), " + mediaFigures(call["summary"])
        #expect(call["ok"]?.boolValue == true, "\(context)")
        #expect(call["endReason"]?.stringValue == "hangup", "\(context)")
        #expect(call["pathNamed"]?.stringValue == "chain b > c > d > e", "\(context)")
        let correlation = call["correlation"]?.doubleValue ?? 0
        #expect(correlation >= meshLabMatchFloor, "correlation \(correlation): \(context)")
        for relay in ["b", "c", "d"] {
            let sessions = try meshLabStep(lab, "sessions \(relay)")["output"]?["sessions"]?.arrayValue ?? []
            #expect(sessions.count == 1, "\(relay): \(sessions)")
            #expect(sessions.first?["role"]?.stringValue == "relay")
            #expect((sessions.first?["packetsForward"]?.intValue ?? 0) > 50 && (sessions.first?["packetsBack"]?.intValue ?? 0) > 50)
        }
    }

    /// A ring a–b–c–d: a's call to c runs on one chain (through b or d) with a standby through the other. The relay
    /// on the active chain is SIGKILLed mid-speech: the call goes on over the standby, the longest gap in the echo
    /// stays under a second, and `node-ctl calls` shows the new chain.
    @Test func aKilledRelayCostsTheCallLessThanASecond() throws {
        let lab = try runMeshLab(["ring", "4", "--step", "call a c 10 &", "--step", "sleep 2.5", "--step", "kill-relay a",
                                  "--step", "sleep 2", "--step", "calls a", "--step", "wait-calls"], timeout: 180)
        let killed = try meshLabStep(lab, "kill-relay a")["node"]?.stringValue ?? "?"
        #expect(["b", "d"].contains(killed))
        let call = try meshLabStep(lab, "call a c 10 &")
        let context = "\(call["endReason"]?.stringValue ?? "-"), \(call["error"]?.stringValue ?? ""), " + mediaFigures(call["summary"])
        #expect(call["ok"]?.boolValue == true, "\(context)")
        let gap = call["longestGapMs"]?.doubleValue ?? .infinity
        #expect(gap < 1_000, "longest gap \(gap) ms: \(context)")
        let calls = try meshLabStep(lab, "calls a")["output"]?["calls"]?.arrayValue ?? []
        let active = calls.first?["chains"]?.arrayValue?.first { $0["role"]?.stringValue == "active" }
        let nodes = lab["nodes"]?.arrayValue ?? []
        let survivor = nodes.first { $0["name"]?.stringValue == (killed == "b" ? "d" : "b") }?["nodeAddress"]?.stringValue
        #expect(active?["nodes"]?.arrayValue?.first?.stringValue == survivor, "\(calls.first ?? .null)")
        #expect((calls.first?["chainSwitches"]?.arrayValue?.count ?? 0) >= 1)
    }
}

/// The echo match a mesh-lab call between neighbours must reach (Tools/bench-call's quality bar; process tests
/// that tolerate a loaded machine use `speechMatchFloor`).
let meshLabMatchFloor = 0.7

/// The repository's `Tools/mesh-lab`.
let meshLabPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Tools/mesh-lab").path

/// Runs `Tools/mesh-lab ARGS --json --bin-dir <Binaries.directory>` and returns its JSON document
/// (`{"ok", "error", "nodes", "edges", "steps"}`, docs/mesh-lab.md). After `timeout` seconds it gets SIGINT (it
/// then stops its nodes and deletes its namespaces), 20 s later SIGKILL. Throws, with the end of mesh-lab's
/// progress output, when it prints no JSON or the document says the scenario did not run (`ok` false: a bad step,
/// a node that did not come up, a timeout). A call that fails is not an error here: see its step's `ok`.
func runMeshLab(_ arguments: [String], timeout: TimeInterval) throws -> JSONValue {
    let run = try runCommand(meshLabPath, arguments + ["--json", "--bin-dir", Binaries.directory], timeout: timeout, stopGrace: 20,
                             recordTimeout: false)
    let progress = run.stderr.split(separator: "\n", omittingEmptySubsequences: false).suffix(30).joined(separator: "\n")
    let what = "mesh-lab \(arguments.joined(separator: " "))"
    let ending = "exit \(run.status)" + (run.timedOut ? ", timed out after \(Int(timeout)) s" : "")
    guard let document = try? decodeJSON(run.stdout) else {
        throw HarnessError("\(what): no JSON (\(ending)):\n\(progress)")
    }
    guard document["ok"]?.boolValue == true else {
        throw HarnessError("\(what): \(document["error"]?.stringValue ?? "failed") (\(ending)):\n\(progress)")
    }
    return document
}

/// The result of the step given as `text` in a mesh-lab document (the first one, if given twice).
func meshLabStep(_ document: JSONValue, _ text: String) throws -> JSONValue {
    guard let step = document["steps"]?.arrayValue?.first(where: { $0["step"]?.stringValue == text }) else {
        throw HarnessError("mesh-lab: no result for step \(text)")
    }
    return step
}
