import ArgumentParser
import Foundation
import MeshIdentity

/// `ForwardLoad`: a load generator and sink for one relay on loopback (Tools/bench-forward, docs/performance.md).
/// Two ends in one process, each on its own UDP socket: the sender S (main thread) and the sink D (a thread).
@main
struct ForwardLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ForwardLoad",
        abstract: "Send call-like media through one relay (mesh-node, the C baseline relay or a TURN server) and measure it at the sink.",
        discussion: """
            Mesh relay (default): S and D link to the relay with their own node identities, S sets up one chain \
            S → relay → D per session with signed set-ups, then sends data messages. --plain: the C relay of \
            Tools/bench-forward.d (labels installed by a control datagram, no link crypto). --turn: a TURN server \
            (coturn with --no-auth): one socket, allocation, permission and channel per session, packets as \
            ChannelData, relayed to the sink from each allocation's relayed address. Every packet is made \
            (mesh: sealed) before the traffic phase, so the sender's own crypto does not limit the rate it offers. \
            Modes: saturate (as fast as the relay takes it: at most --window packets in flight, for --seconds or \
            --count packets; no latency), voice (--sessions × 50 packets/s, on one shared 20 ms grid or each \
            session at its own random phase, latency from each packet's scheduled send time, and a direct baseline \
            stream S → D at 500 packets/s not through the relay). Prints one JSON object.
            """)

    @Option(help: "The relay's UDP port on 127.0.0.1 (mesh-node, or the C relay with --plain).") var relayPort: UInt16?
    @Option(help: "saturate or voice.") var mode: String
    @Flag(help: "Speak the C relay's plain format instead of the mesh protocol.") var plain = false
    @Option(help: ArgumentHelp("Go through the TURN server at 127.0.0.1:PORT (RFC 8656, without credentials) instead of a relay at --relay-port.",
                               valueName: "127.0.0.1:PORT"))
    var turn: String?
    @Flag(help: "Send the packets of each batch (one tick of the grid, one saturate batch) in trunks with mini-frames, as a node with --trunking on does.")
    var trunking = false
    @Option(help: "Sessions (chains) through the relay.") var sessions = 100
    @Option(help: "RTP payload bytes per packet (at least 16).") var payloadBytes = 120
    @Option(help: "How long to send, seconds.") var seconds: Double = 5
    @Option(help: "saturate: send this many packets whatever the time (default: as many as go within --seconds).")
    var count: Int?
    @Option(help: "saturate: most packets in flight through the relay.") var window = 4_096
    @Option(help: "voice, independent grid: send the packets due within this many µs together (0: each at its own phase).")
    var batchUs = 0
    @Option(help: "voice: shared (every session on the same 20 ms tick) or independent (each its own random phase).")
    var grid = "independent"
    @Option(help: "The relay's process id: its CPU time and resident memory are read from /proc around the traffic.")
    var relayPid: Int32?
    @Option(help: "Give up setting sessions up after this long, seconds.") var setupTimeout: Double = 60

    /// The TURN server's port from `--turn 127.0.0.1:PORT` (loopback only, as every address here).
    private var turnPort: UInt16? {
        guard let turn, turn.hasPrefix("127.0.0.1:") else { return nil }
        return UInt16(turn.dropFirst("127.0.0.1:".count)).flatMap { $0 == 0 ? nil : $0 }
    }

    func validate() throws {
        guard (relayPort == nil) != (turn == nil) else { throw ValidationError("give either --relay-port or --turn") }
        guard turn == nil || turnPort != nil else { throw ValidationError("--turn takes 127.0.0.1:PORT (loopback only)") }
        guard turn == nil || !(plain || trunking) else { throw ValidationError("--turn goes with neither --plain nor --trunking") }
        guard ["saturate", "voice"].contains(mode) else { throw ValidationError("--mode must be saturate or voice") }
        guard ["shared", "independent"].contains(grid) else { throw ValidationError("--grid must be shared or independent") }
        guard sessions >= 1, sessions <= 1_000_000 else { throw ValidationError("--sessions must be 1 to 1,000,000") }
        guard payloadBytes >= MediaPacket.stampBytes, payloadBytes <= 1_400 else { throw ValidationError("--payload-bytes must be 16 to 1,400") }
        guard batchUs >= 0, batchUs <= 20_000 else { throw ValidationError("--batch-us must be 0 to 20000") }
        guard window >= 1, (count ?? 1) >= 1 else { throw ValidationError("--window and --count must be positive") }
        // The sender's links are not ticked while the pre-sealed packets go out; its sessions rekey after 120 s.
        guard seconds > 0, seconds <= 100 else { throw ValidationError("--seconds must be above 0 and at most 100") }
        guard !(trunking && plain) else { throw ValidationError("--trunking needs the mesh protocol (not --plain)") }
    }

    func run() throws {
        let framing: Framing = turn != nil ? .turn : plain ? .plain : .mesh(sender: PrivateKey(), sink: PrivateKey())
        let (senderFd, _) = try BatchSocket.bind()
        let (sinkFd, sinkPort) = try BatchSocket.bind()
        let shared = Shared()
        let (sessions, relayPort) = (self.sessions, self.relayPort ?? turnPort ?? 0)
        let sinkThread = Thread {
            var sink = Sink(fd: sinkFd, framing: framing, sessions: sessions, relayPort: relayPort, shared: shared)
            sink.run()
        }
        sinkThread.start()
        var sinkFinished = false
        defer {
            if !sinkFinished {
                shared.stop.store(true, ordering: .releasing)
                _ = shared.done.wait(timeout: .now() + 10)
            }
            close(senderFd)
            close(sinkFd)
        }
        let relay = relayPid.map(RelayProcess.init)
        var sender = Sender(fd: senderFd, framing: framing, sessions: sessions, payloadBytes: payloadBytes, relayPort: relayPort,
                            sinkPort: sinkPort, trunking: trunking)
        try sender.link(shared: shared, timeoutNs: 20_000_000_000)
        let rssBefore = relay?.rssKiB()
        let setupStart = monotonicNs()
        try sender.setUp(window: 128, timeoutNs: Int(setupTimeout * 1e9))
        let setupSeconds = Double(monotonicNs() - setupStart) / 1e9
        let relayedPorts = sender.relayedPorts
        shared.relayedPorts.withLock { $0 = relayedPorts }
        let rssAfterSetup = relay?.rssKiB()
        guard sender.sessionsUp > 0 else {
            throw LoadError(description: "no session set up in \(setupTimeout) s (refusals: \(sender.refusals))")
        }
        let prepareStart = monotonicNs()
        let groups = mode == "voice" ? voiceGroups(&sender) : saturateGroups(&sender)
        let prepareSeconds = Double(monotonicNs() - prepareStart) / 1e9

        shared.measuring.store(true, ordering: .releasing)
        let cpuStart = (relay?.cpuSeconds(), Self.ownCpuSeconds(), relay?.runDelaySeconds())
        let start = monotonicNs()
        var lag = LatencyHistogram()
        let counts: (relayed: Int, direct: Int)
        if mode == "voice" {
            shared.trafficStart.store(start, ordering: .releasing)
            counts = voice(sender, groups: groups, start: start, lag: &lag)
        } else {
            counts = saturate(sender, groups: groups, start: start, shared: shared)
        }
        let duration = Double(monotonicNs() - start) / 1e9
        let cpuEnd = (relay?.cpuSeconds(), Self.ownCpuSeconds(), relay?.runDelaySeconds())
        let rssEnd = relay?.rssKiB()
        let drainEnd = monotonicNs() + 300_000_000
        while monotonicNs() < drainEnd { sender.pump(timeoutNs: 5_000_000) }
        shared.measuring.store(false, ordering: .releasing)
        shared.stop.store(true, ordering: .releasing)
        guard shared.done.wait(timeout: .now() + 10) == .success, let sink = shared.report.withLock({ $0 }) else {
            throw LoadError(description: "the sink thread did not finish")
        }
        sinkFinished = true

        let sent = counts.relayed
        let lost = sent - sink.unique
        let relayCpu = cpuStart.0.flatMap { before in cpuEnd.0.map { $0 - before } }
        let relayRunDelay = cpuStart.2.flatMap { before in cpuEnd.2.map { $0 - before } }
        let report = Report(
            mode: mode, relay: turn != nil ? "turn" : plain ? "plain" : "mesh", grid: mode == "voice" ? grid : nil, sessions: sessions,
            sessionsUp: sender.sessionsUp, setupsAnswered: sink.setupsAnswered, payloadBytes: payloadBytes, setupSeconds: setupSeconds, prepareSeconds: prepareSeconds,
            durationSeconds: duration, sent: sent, received: sink.unique, lost: lost, duplicates: sink.duplicates,
            misrouted: sink.misrouted, trunking: trunking, trunkDrops: sink.trunkDrops, lossPercent: sent > 0 ? 100 * Double(lost) / Double(sent) : 0,
            sentPerSecond: Double(sent) / duration, receivedPerSecond: Double(sink.unique) / duration,
            latencyP50Us: sink.latencyP50Us, latencyP99Us: sink.latencyP99Us,
            directSent: counts.direct, directReceived: sink.directPackets,
            directLatencyP50Us: sink.directP50Us, directLatencyP99Us: sink.directP99Us,
            sinkDatagrams: sink.wireDatagrams, sinkBytes: sink.wireBytes, otherPayloads: sink.otherPayloads,
            sendLagP99Us: mode == "voice" ? lag.percentile(0.99) : nil, sendErrors: sender.sendErrors,
            refusals: sender.refusals, teardowns: sender.teardowns, generatorCpuSeconds: cpuEnd.1 - cpuStart.1,
            relayCpuSeconds: relayCpu, relayRunDelaySeconds: relayRunDelay, relayRssBeforeSetupKiB: rssBefore, relayRssAfterSetupKiB: rssAfterSetup, relayRssEndKiB: rssEnd)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    }

    /// voice: every session sends 50 packets/s for `seconds`, on one shared 20 ms grid or each at its own random phase
    /// within the 20 ms; the baseline stream 500 packets/s, every 2 ms (enough samples for its p99 in a few seconds).
    /// Packets due at the same time form one group.
    private func voiceGroups(_ sender: inout Sender) -> [Group] {
        let period = 20_000_000
        // With --batch-us, independent phases fall on a grid of that step: the packets due within one step leave
        // together, as an upstream relay's read batch (or its trunk hold) would pass them on.
        let step = max(batchUs * 1_000, 1)
        var phases = (0..<sessions).map { (session: $0, phase: grid == "shared" ? 0 : Int.random(in: 0..<period) / step * step) }
        phases += (0..<10).map { (Sender.direct, $0 * period / 10) }
        phases.sort { ($0.phase, $0.session) < ($1.phase, $1.session) }
        var groups: [Group] = []
        for k in 0..<Int((seconds * 1e9 / Double(period)).rounded()) {
            var i = 0
            while i < phases.count {
                var end = i + 1
                while end < phases.count, phases[end].phase == phases[i].phase { end += 1 }
                groups.append(sender.prepare(phases[i..<end].lazy.map(\.session), offsetNs: k * period + phases[i].phase))
                i = end
            }
        }
        return groups
    }

    /// Sends each group when due (the queue goes out when the next group is not due yet); records how late.
    private func voice(_ sender: Sender, groups: [Group], start: Int, lag: inout LatencyHistogram) -> (relayed: Int, direct: Int) {
        var relayed = 0, direct = 0
        for group in groups {
            let due = start + group.offsetNs
            var now = monotonicNs()
            if now < due {
                sender.socket.flush()
                while now < due {
                    var wait = timespec(tv_sec: 0, tv_nsec: min(due - now, 1_000_000))
                    nanosleep(&wait, nil)
                    now = monotonicNs()
                }
            }
            lag.record(ns: now - due)
            sender.send(group)
            relayed += group.relayed
            direct += group.direct
        }
        sender.socket.flush()
        return (relayed, direct)
    }

    /// saturate: groups of 64 packets round the sessions, `count` packets or a pool for `seconds` at 100,000 packets/s
    /// (mesh; the mesh relay forwards fewer than that per core here) or 200,000 (plain and TURN, cheap to make). A run whose pool
    /// is sent before `seconds` ends early (`durationSeconds`).
    private func saturateGroups(_ sender: inout Sender) -> [Group] {
        let up = (0..<sessions).filter { sender.relayLabels[$0] != 0 }
        var groups: [Group] = []
        let sealed = if case .mesh = sender.framing { true } else { false }
        var cursor = 0, left = count ?? Int(seconds * (sealed ? 100_000 : 200_000))
        while left > 0 {
            let n = min(BatchSocket.batch, left)
            groups.append(sender.prepare((0..<n).lazy.map { up[(cursor + $0) % up.count] }, offsetNs: 0))
            cursor = (cursor + n) % up.count
            left -= n
        }
        return groups
    }

    /// As fast as the relay takes it: the next group while fewer than `window` packets are in flight (sent and not yet
    /// at the sink); packets in flight for 200 ms without progress count as lost. Until the groups or `seconds` end.
    private func saturate(_ sender: Sender, groups: [Group], start: Int, shared: Shared) -> (relayed: Int, direct: Int) {
        let deadline = start + Int(seconds * 1e9)
        var sent = 0, writtenOff = 0, next = 0
        var lastProgress = (received: 0, at: start)
        while next < groups.count, count != nil || monotonicNs() < deadline {
            let received = shared.received.load(ordering: .acquiring)
            let now = monotonicNs()
            if received != lastProgress.received {
                lastProgress = (received, now)
            } else if now - lastProgress.at > 200_000_000 {
                writtenOff = sent - received
                lastProgress.at = now
            }
            guard window - (sent - received - writtenOff) >= min(groups[next].relayed, window) else {
                var wait = timespec(tv_sec: 0, tv_nsec: 20_000)
                nanosleep(&wait, nil)
                continue
            }
            sender.send(groups[next])
            sender.socket.flush()
            sent += groups[next].relayed
            next += 1
        }
        return (sent, 0)
    }

    /// This process's user and system CPU time, seconds.
    private static func ownCpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let seconds = { (t: timeval) in Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// The relay's process, read from /proc.
struct RelayProcess {
    let pid: Int32

    /// User and system CPU time (utime + stime of /proc/PID/stat), seconds.
    func cpuSeconds() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// How long its threads were ready to run but waited for a CPU (run_delay of /proc/PID/task/*/schedstat), seconds:
    /// on a shared machine, the time other processes took from it.
    func runDelaySeconds() -> Double? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return nil }
        let delays = tasks.compactMap { task in
            (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/schedstat", encoding: .utf8))
                .flatMap { $0.split(separator: " ").dropFirst().first.flatMap { Double($0) } }
        }
        return delays.isEmpty ? nil : delays.reduce(0, +) / 1e9
    }

    /// Resident memory (VmRSS of /proc/PID/status), KiB.
    func rssKiB() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
    }
}

/// The JSON object ForwardLoad prints.
struct Report: Encodable {
    let mode: String
    /// "mesh" (mesh-node), "plain" (the C relay) or "turn" (a TURN server).
    let relay: String
    let grid: String?
    let sessions: Int
    let sessionsUp: Int
    /// Set-ups the sink answered (mesh; a set-up the relay sent again is answered again).
    let setupsAnswered: Int
    let payloadBytes: Int
    let setupSeconds: Double
    /// Making (mesh: sealing) every packet before the traffic phase.
    let prepareSeconds: Double
    let durationSeconds: Double
    /// Relayed packets: sent by S, received at D (unique), lost (sent − received), received twice, with a label of
    /// another session.
    let sent: Int
    let received: Int
    let lost: Int
    let duplicates: Int
    let misrouted: Int
    /// Whether S sent trunks; trunk entries D could not restore.
    let trunking: Bool
    let trunkDrops: Int
    let lossPercent: Double
    let sentPerSecond: Double
    let receivedPerSecond: Double
    /// voice: one-way latency S → relay → D from each packet's scheduled send time, µs (saturate: none).
    let latencyP50Us: Int?
    let latencyP99Us: Int?
    /// The baseline stream S → D without the relay, in the same run.
    let directSent: Int
    let directReceived: Int
    let directLatencyP50Us: Int?
    let directLatencyP99Us: Int?
    /// Datagrams and UDP payload bytes D received from the relay during the traffic phase and its 300 ms drain.
    let sinkDatagrams: Int
    let sinkBytes: Int
    let otherPayloads: Int
    /// voice: how late the sender sent a batch against its schedule (p99, µs): large means the generator fell behind.
    let sendLagP99Us: Int?
    let sendErrors: Int
    let refusals: [String: Int]
    let teardowns: Int
    /// CPU time of this process (both ends) during the traffic phase.
    let generatorCpuSeconds: Double
    /// With --relay-pid: the relay's CPU time during the traffic phase, and its resident memory before the set-ups,
    /// after them and at the end of the traffic phase.
    let relayCpuSeconds: Double?
    /// With --relay-pid: how long the relay's threads waited for a CPU while ready to run, during the traffic phase.
    let relayRunDelaySeconds: Double?
    let relayRssBeforeSetupKiB: Int?
    let relayRssAfterSetupKiB: Int?
    let relayRssEndKiB: Int?
}
