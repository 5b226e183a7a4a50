import Foundation
import MeshIdentity
import MeshLink
import MeshRouting
import MeshStun
import Synchronization

/// How the two ends speak to the relay.
enum Framing: Sendable {
    /// The mesh protocol: link crypto (each end its own node identity), chain set-ups, data messages `[0x34][label][inner]`.
    case mesh(sender: PrivateKey, sink: PrivateKey)
    /// The C relay's plain datagrams `[label u32][inner]`, labels installed by a control message.
    case plain
    /// A TURN server (RFC 8656): ChannelData `[channel u16][length u16][inner]` on each session's own socket, the
    /// channel being the session's label; the server relays the inner bytes alone, from the session's relayed address.
    case turn

    /// Where the inner bytes start in a data message of this framing.
    var innerOffset: Int {
        switch self {
        case .mesh: 5
        case .plain, .turn: 4
        }
    }

    /// The framing of the direct baseline stream S → D: that of the relayed packets, except plain with TURN (no TURN
    /// server on that path).
    var direct: Framing {
        if case .turn = self { return .plain }
        return self
    }

    /// A data message of this framing around `inner` with the relay's `label` for its session.
    func message(label: UInt32, inner: [UInt8]) -> [UInt8] {
        switch self {
        case .mesh: return ChainMessage.data(label: label, inner)
        case .plain:
            var bytes = [0, 0, 0, 0] + inner
            put(label, in: &bytes, at: 0)
            return bytes
        case .turn: return ChannelData.frame(channel: UInt16(truncatingIfNeeded: label), data: inner)
        }
    }

    /// Writes the relay's `label` into a data message of this framing made with another one (a template stamped per
    /// packet).
    func set(label: UInt32, in message: inout [UInt8]) {
        switch self {
        case .mesh, .plain: put(label, in: &message, at: innerOffset - 4)
        case .turn: put(UInt16(truncatingIfNeeded: label), in: &message, at: 0)
        }
    }
}

/// Labels the ends give out: the sink takes session `i`'s packets with `sinkBase + i`, and the sender's direct
/// baseline stream (not through the relay) with `direct`.
enum Labels {
    static let sinkBase: UInt32 = 0x4000_0000
    static let direct: UInt32 = 0x3FFF_FFFF
    static let senderBase: UInt32 = 0x5000_0000

    /// The C relay's label for session `i`: spread over the u32 range (an odd multiplier is a bijection), never 0.
    static func plainRelay(_ i: Int) -> UInt32 { UInt32(truncatingIfNeeded: i + 1) &* 0x9E37_79B1 }
}

/// State the sender (main thread) and the sink thread share.
final class Shared: Sendable {
    let stop = Atomic<Bool>(false)
    /// Relayed data packets the sink took so far (the sender's window in saturate mode).
    let received = Atomic<Int>(0)
    /// The sink's link to the relay is up, so the relay can pass set-ups on to it (mesh).
    let sinkLinked = Atomic<Bool>(false)
    /// The sink counts datagrams and bytes from the relay only while this is set (the traffic phase and its drain).
    let measuring = Atomic<Bool>(false)
    /// When the traffic phase started (monotonic ns) in voice mode, which packets' scheduled send times count from;
    /// 0: latencies are not measured (saturate mode).
    let trafficStart = Atomic<Int>(0)
    /// TURN: each session's relayed port, which the sink maps back to the session (set once the sessions are up).
    let relayedPorts = Mutex<[UInt16]>([])
    let report = Mutex<SinkReport?>(nil)
    let done = DispatchSemaphore(value: 0)
}

/// What the sink saw.
struct SinkReport: Sendable {
    var unique = 0
    var duplicates = 0
    /// Packets whose label (TURN: relayed source address) named another session than the one inside them.
    var misrouted = 0
    /// Trunk entries the sink could not restore (malformed, a mini-frame without or against its context).
    var trunkDrops = 0
    var latencyP50Us: Int?
    var latencyP99Us: Int?
    var directPackets = 0
    var directP50Us: Int?
    var directP99Us: Int?
    /// Datagrams and UDP payload bytes from the relay during the traffic phase.
    var wireDatagrams = 0
    var wireBytes = 0
    /// Link payloads or datagrams that were not a generated packet (other messages, unknown labels).
    var otherPayloads = 0
    var setupsAnswered = 0
}

/// The sink D: takes the relay's datagrams on its own socket (and the sender's direct baseline stream), answers
/// chain set-ups (mesh), checks every packet: session (by its label, or with TURN by the relayed address it came
/// from), loss and duplicates by packet number, and in voice mode the one-way latency from the packet's scheduled
/// send time.
struct Sink {
    let framing: Framing
    let sessions: Int
    let relayPort: UInt16
    let shared: Shared
    private let socket: BatchSocket
    private var links: LinkManager<LoopbackPort>?
    private var relayNode: WalletAddress?
    private var seen: [SeenSet]
    private var latency = LatencyHistogram()
    private var direct = LatencyHistogram()
    private var report = SinkReport()
    private var takenSinceSignal = 0
    /// `shared.trafficStart` as last read.
    private var start = 0
    /// Trunks from the relay (a relay with --trunking on), opened as a node does.
    private var trunks = TrunkDecoder()
    /// TURN: the session relayed from each source port, −1 for none (empty until `shared.relayedPorts` is set).
    private var sessionOfPort: [Int32] = []

    init(fd: Int32, framing: Framing, sessions: Int, relayPort: UInt16, shared: Shared) {
        self.framing = framing
        self.sessions = sessions
        self.relayPort = relayPort
        self.shared = shared
        socket = BatchSocket(fd: fd)
        seen = Array(repeating: SeenSet(), count: sessions)
        if case .mesh(_, let sink) = framing { links = LinkManager(identity: sink) }
    }

    /// Runs until `shared.stop`, then publishes the report and signals `shared.done`.
    mutating func run() {
        var nextTick = 0
        if links != nil { perform(links!.connect(to: LoopbackPort(port: relayPort), pinned: nil, now: wallMs())) }
        while !shared.stop.load(ordering: .acquiring) {
            let count = socket.receive(timeoutNs: 5_000_000)
            let measuring = shared.measuring.load(ordering: .relaxed)
            let nowNs = monotonicNs()
            start = shared.trafficStart.load(ordering: .acquiring)
            let nowMs = links == nil || count == 0 ? 0 : wallMs()
            if case .turn = framing, sessionOfPort.isEmpty { mapRelayedPorts() }
            for i in 0..<count {
                let port = socket.source(i)
                let relayed = sessionOfPort.isEmpty ? -1 : Int(sessionOfPort[Int(port)])
                if port == relayPort || relayed >= 0, measuring {
                    report.wireDatagrams += 1
                    report.wireBytes += socket.size(i)
                }
                if links != nil {
                    perform(links!.receive(socket.datagram(i), from: LoopbackPort(port: port), now: nowMs), nowNs: nowNs)
                } else if relayed >= 0 {
                    take(message: socket.datagram(i), innerAt: 0, session: relayed, nowNs: nowNs)
                } else {
                    take(message: socket.datagram(i), labelAt: 0, nowNs: nowNs)
                }
            }
            socket.flush()
            if takenSinceSignal > 0 {
                shared.received.add(takenSinceSignal, ordering: .releasing)
                takenSinceSignal = 0
            }
            if links != nil, nowNs >= nextTick {
                perform(links!.tick(now: wallMs()))
                socket.flush()
                nextTick = nowNs + 100_000_000
            }
        }
        report.unique = seen.reduce(0) { $0 + $1.unique }
        report.duplicates = seen.reduce(0) { $0 + $1.duplicates }
        report.latencyP50Us = latency.percentile(0.5)
        report.latencyP99Us = latency.percentile(0.99)
        report.directPackets = direct.count
        report.directP50Us = direct.percentile(0.5)
        report.directP99Us = direct.percentile(0.99)
        let final = report
        shared.report.withLock { $0 = final }
        shared.done.signal()
    }

    /// TURN: the map from relayed source ports to sessions, once the sender has published the ports.
    private mutating func mapRelayedPorts() {
        let ports = shared.relayedPorts.withLock { $0 }
        guard !ports.isEmpty else { return }
        sessionOfPort = Array(repeating: -1, count: Int(UInt16.max) + 1)
        for (session, port) in ports.enumerated() { sessionOfPort[Int(port)] = Int32(session) }
    }

    private mutating func perform(_ actions: [LinkAction<LoopbackPort>], nowNs: Int = 0) {
        for action in actions {
            switch action {
            case .send(let bytes, let to): socket.queue(bytes, to: to.port)
            case .deliver(let payload, let from): receive(linkPayload: payload, from: from, nowNs: nowNs)
            case .up(let node, let endpoint) where endpoint.port == relayPort:
                relayNode = node
                shared.sinkLinked.store(true, ordering: .releasing)
            case .down(let node, _) where node == relayNode:
                shared.sinkLinked.store(false, ordering: .releasing)
            default: break
            }
        }
    }

    /// Every link payload the sink receives goes through here (the place a trunk decoder unpacks trunks).
    private mutating func receive(linkPayload payload: [UInt8], from node: WalletAddress, nowNs: Int) {
        if ChainMessage.isData(payload) {
            take(message: payload, labelAt: 1, nowNs: nowNs)
        } else if TrunkWire.isTrunk(payload) {
            for message in trunks.decode(payload) { take(message: message, labelAt: 1, nowNs: nowNs) }
            report.trunkDrops = trunks.counters.malformed + trunks.counters.miniWithoutContext + trunks.counters.miniMismatch
        } else if case .setup(let setup)? = ChainMessage(parsing: payload), node == relayNode, setup.key.call < UInt64(sessions) {
            let accept = ChainMessage.accept(setup.key, label: Labels.sinkBase + UInt32(setup.key.call), figures: [])
            perform(links!.send(accept.serialize(), to: node, now: wallMs()))
            report.setupsAnswered += 1
        } else {
            report.otherPayloads += 1
        }
    }

    /// One data message (mesh data payload or plain datagram) whose label starts at `labelAt`: the baseline stream's
    /// label, or one the sink gave a session.
    private mutating func take(message: [UInt8], labelAt: Int, nowNs: Int) {
        let label = message.count >= labelAt + 4 ? message.withUnsafeBytes { get(UInt32.self, $0, at: labelAt) } : nil
        switch label {
        case Labels.direct?: take(message: message, innerAt: labelAt + 4, session: Sender.direct, nowNs: nowNs)
        case let label? where label &- Labels.sinkBase < UInt32(sessions):
            take(message: message, innerAt: labelAt + 4, session: Int(label &- Labels.sinkBase), nowNs: nowNs)
        default: report.otherPayloads += 1
        }
    }

    /// One packet whose inner bytes start at `innerAt`, come as `session`'s (by their label or the relayed address
    /// they came from; `Sender.direct`: the baseline stream).
    private mutating func take(message: [UInt8], innerAt: Int, session: Int, nowNs: Int) {
        message.withUnsafeBytes { bytes in
            guard let packet = MediaPacket.read(bytes, at: innerAt) else {
                report.otherPayloads += 1
                return
            }
            if session == Sender.direct {
                if start > 0 { direct.record(ns: nowNs - start - packet.offsetNs) }
                return
            }
            guard session == packet.session else {
                report.misrouted += 1
                return
            }
            seen[session].insert(packet.number)
            if start > 0 { latency.record(ns: nowNs - start - packet.offsetNs) }
            takenSinceSignal += 1
        }
    }
}
