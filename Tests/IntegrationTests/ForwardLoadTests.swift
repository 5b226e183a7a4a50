import Foundation
import MeshControl
import Testing

/// The load generator of Tools/bench-forward (docs/performance.md) through a real relay: if the generator breaks
/// (links, chain set-ups by hand, data messages, the sink's checks), the benchmark's figures would be wrong silently.
@Suite(.serialized) struct ForwardLoadTests {
    @Test func twentySessionsThroughARealRelayAllSetUpWithoutLoss() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let relay = try NodeProcess("r", in: scratch, arguments: ["--trunking", "off", "--setups-per-second", "1000"])
        defer { relay.stop() }
        let pid = String(relay.process.processIdentifier)
        let result = try runCommand(Binaries.directory + "/ForwardLoad", [
            "--relay-port", String(relay.port), "--mode", "voice", "--sessions", "20", "--seconds", "2", "--relay-pid", pid,
        ], timeout: 15)
        #expect(result.status == 0, "ForwardLoad failed: \(result.stderr)")
        let report = try decodeJSON(result.stdout)
        #expect(report["sessionsUp"]?.intValue == 20)
        let sent = report["sent"]?.intValue ?? 0
        #expect(sent >= 20 * 50 * 2 * 9 / 10, "sent \(sent) packets")
        #expect((report["lossPercent"]?.doubleValue ?? 100) < 1)
        #expect(report["misrouted"]?.intValue == 0)
        #expect(report["duplicates"]?.intValue == 0)
        #expect((report["directReceived"]?.intValue ?? 0) > 0)
        #expect((report["latencyP50Us"]?.intValue ?? 0) > 0)
        #expect((report["relayCpuSeconds"]?.doubleValue ?? 0) > 0)

        // The relay counted what it forwarded: every session relayed, every packet the sink saw.
        let sessions = try relay.ctlJSON(["sessions"])
        #expect((sessions["sessions"]?.arrayValue ?? []).filter { $0["role"]?.stringValue == "relay" }.count == 20)
        #expect((sessions["counters"]?["forwardedPackets"]?.intValue ?? 0) >= report["received"]?.intValue ?? .max)
    }
}
