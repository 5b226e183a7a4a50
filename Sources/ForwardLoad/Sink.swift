import Foundation
import MeshIdentity
import MeshLink
import MeshRouting
import Synchronization

/// How the two ends speak to the relay.
enum Framing: Sendable {
    /// The mesh protocol: link crypto (each end its own node identity), chain set-ups, data messages `[0x34][label][inner]`.
    case mesh(sender: PrivateKey, sink: PrivateKey)
    /// The C relay's plain datagrams `[label u32][inner]`, labels installed by a control message.
    case plain

    /// Where the inner bytes start in a data message of this framing.
    var innerOffset: Int {
        switch self {
        case .mesh: 5
        case .plain: 4
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
    let report = Mutex<SinkReport?>(nil)
    let done = DispatchSemaphore(value: 0)
}

/// What the sink saw.
struct SinkReport: Sendable {
    var unique = 0
    var duplicates = 0
    /// Packets whose label named another session than the one inside them.
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
/// chain set-ups (mesh), checks every packet: session, loss and duplicates by packet number, and in voice mode the
/// one-way latency from the packet's scheduled send time.
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
            for i in 0..<count {
                let port = socket.source(i)
                if port == relayPort, measuring {
                    report.wireDatagrams += 1
                    report.wireBytes += socket.size(i)
                }
                if links != nil {
                    perform(links!.receive(socket.datagram(i), from: LoopbackPort(port: port), now: nowMs), nowNs: nowNs)
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

    /// One data message (mesh data payload or plain datagram) whose label starts at `labelAt`.
    private mutating func take(message: [UInt8], labelAt: Int, nowNs: Int) {
        message.withUnsafeBytes { bytes in
            guard bytes.count >= labelAt + 4, let packet = MediaPacket.read(bytes, at: labelAt + 4) else {
                report.otherPayloads += 1
                return
            }
            let label = get(UInt32.self, bytes, at: labelAt)
            if label == Labels.direct {
                if start > 0 { direct.record(ns: nowNs - start - packet.offsetNs) }
                return
            }
            let session = Int(label &- Labels.sinkBase)
            guard session < sessions else {
                report.otherPayloads += 1
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
