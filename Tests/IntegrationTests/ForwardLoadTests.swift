import Foundation
import MeshControl
import Testing

/// The load generator of Tools/bench-forward (docs/performance.md) through a real relay: if the generator breaks
/// (links, chain set-ups by hand, data messages, the sink's checks), the benchmark's figures would be wrong silently.
@Suite(.serialized) struct ForwardLoadTests {
    /// Trunking off, and on at both the generator and the relay (trunks with mini-frames each way, restored exactly:
    /// the sink's checks read the restored bytes).
    @Test(arguments: ["off", "on"]) func twentySessionsThroughARealRelayAllSetUpWithoutLoss(_ trunking: String) throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let relay = try NodeProcess("r", in: scratch, arguments: ["--trunking", trunking, "--setups-per-second", "1000"])
        defer { relay.stop() }
        let pid = String(relay.process.processIdentifier)
        let result = try runCommand(Binaries.directory + "/ForwardLoad", [
            "--relay-port", String(relay.port), "--mode", "voice", "--sessions", "20", "--seconds", "2", "--relay-pid", pid,
            "--grid", "shared",
        ] + (trunking == "on" ? ["--trunking"] : []), timeout: 15)
        #expect(result.status == 0, "ForwardLoad failed: \(result.stderr)")
        let report = try decodeJSON(result.stdout)
        #expect(report["sessionsUp"]?.intValue == 20)
        let sent = report["sent"]?.intValue ?? 0
        #expect(sent >= 20 * 50 * 2 * 9 / 10, "sent \(sent) packets")
        #expect((report["lossPercent"]?.doubleValue ?? 100) < 1)
        #expect(report["misrouted"]?.intValue == 0)
        #expect(report["duplicates"]?.intValue == 0)
        #expect(report["trunkDrops"]?.intValue == 0)
        // 20 sessions on one grid: without trunks a datagram per packet; with them one or two per tick.
        let datagrams = report["sinkDatagrams"]?.intValue ?? 0
        let received = report["received"]?.intValue ?? 0
        if trunking == "on" {
            #expect(datagrams * 5 < received, "\(datagrams) datagrams for \(received) packets")
        } else {
            #expect(datagrams >= received, "\(datagrams) datagrams for \(received) packets")
        }
        #expect((report["directReceived"]?.intValue ?? 0) > 0)
        #expect((report["latencyP50Us"]?.intValue ?? 0) > 0)
        #expect((report["relayCpuSeconds"]?.doubleValue ?? 0) > 0)

        // The relay counted what it forwarded: every session relayed, every packet the sink saw.
        let sessions = try relay.ctlJSON(["sessions"])
        #expect((sessions["sessions"]?.arrayValue ?? []).filter { $0["role"]?.stringValue == "relay" }.count == 20)
        #expect((sessions["counters"]?["forwardedPackets"]?.intValue ?? 0) >= report["received"]?.intValue ?? .max)
    }
}
