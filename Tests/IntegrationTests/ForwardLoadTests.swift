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
        Self.expectEveryPacketThrough(report)
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

    /// Twenty sessions of two seconds at 50 packets/s: all set up, nearly every packet sent and through, none to
    /// the wrong session or twice.
    static func expectEveryPacketThrough(_ report: JSONValue) {
        #expect(report["sessionsUp"]?.intValue == 20)
        let sent = report["sent"]?.intValue ?? 0
        #expect(sent >= 20 * 50 * 2 * 9 / 10, "sent \(sent) packets")
        #expect((report["lossPercent"]?.doubleValue ?? 100) < 1)
        #expect(report["misrouted"]?.intValue == 0)
        #expect(report["duplicates"]?.intValue == 0)
    }

    /// The TURN anchor of Tools/bench-forward (--anchors turn): through a real coturn, each session with its own
    /// socket, allocation, permission and channel; coturn relays each ChannelData's inner bytes to the sink from the
    /// session's relayed address, which the sink maps back to the session.
    @Test(.enabled(if: TurnServer.executable != nil, "turnserver (coturn) is not installed: Tools/setup installs it"))
    func twentySessionsThroughCoturnAllSetUpWithoutLoss() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let turn = try TurnServer(in: scratch)
        defer { turn.stop() }
        let result = try runCommand(Binaries.directory + "/ForwardLoad", [
            "--turn", "127.0.0.1:\(turn.port)", "--mode", "voice", "--sessions", "20", "--seconds", "2", "--grid", "shared",
            "--relay-pid", String(turn.process.processIdentifier),
        ], timeout: 15)
        #expect(result.status == 0, "ForwardLoad failed: \(result.stderr)")
        let report = try decodeJSON(result.stdout)
        #expect(report["relay"]?.stringValue == "turn")
        Self.expectEveryPacketThrough(report)
        #expect(report["otherPayloads"]?.intValue == 0)
        #expect(report["sendErrors"]?.intValue == 0)
        // One datagram a packet from the relayed addresses, carrying the inner bytes alone: [0x20][RTP header][120 bytes].
        let datagrams = report["sinkDatagrams"]?.intValue ?? 0
        #expect(datagrams >= report["received"]?.intValue ?? .max)
        #expect(report["sinkBytes"]?.intValue == datagrams * (1 + 12 + 120))
        #expect((report["directReceived"]?.intValue ?? 0) > 0)
        #expect((report["latencyP50Us"]?.intValue ?? 0) > 0)
    }
}

/// Debian's coturn on a free UDP port of 127.0.0.1, without credentials, as Tools/bench-forward runs it (its log in the
/// scratch folder). `stop()` ends it.
final class TurnServer {
    static let executable = ["/usr/bin", "/usr/sbin", "/usr/local/bin"].map { $0 + "/turnserver" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    let port: UInt16
    let process = Process()
    let log: String

    /// Starts it and waits (up to 10 s) until it answers a STUN Binding Request.
    init(in scratch: Scratch) throws {
        guard let executable = Self.executable else { throw HarnessError("turnserver is not installed") }
        port = try RFC5389Client().localPort
        log = scratch.file("turn.log")
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = [
            "-n", "--no-auth", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port", String(port),
            "--min-port", "10000", "--max-port", "29999", "--allow-loopback-peers", "--no-tcp", "--no-tls", "--no-dtls",
            "--no-tcp-relay", "--no-cli", "--relay-threads", "1", "--log-file", log, "--simple-log", "--no-stdout-log",
            "--pidfile", scratch.file("turn.pid"), "--userdb", scratch.file("turndb"),
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let client = try RFC5389Client()
        let deadline = Date().addingTimeInterval(10)
        while client.mappedAddress(port: port, wait: 0.2) == nil {
            guard process.isRunning, Date() < deadline else {
                stop()
                let tail = (try? String(contentsOfFile: log, encoding: .utf8))?.suffix(2_000) ?? "no log"
                throw HarnessError("turnserver on 127.0.0.1:\(port) did not answer within 10 s: \(tail)")
            }
        }
    }

    /// SIGTERM, then SIGKILL after 5 s.
    func stop() { terminate(process) }
}
