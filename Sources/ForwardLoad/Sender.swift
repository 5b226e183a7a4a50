import Glibc
import MeshIdentity
import MeshLink
import MeshRouting
import MeshStun

/// The neighbours the sender sends data to.
enum Hop {
    case relay
    /// The sink itself, for the direct baseline stream.
    case sink
}

/// The sender S: links to the relay and to the sink (mesh), sets up one chain per session S → relay → sink by hand
/// (TURN: an allocation, a permission and a channel to the sink per session, each on its own socket), then prepares
/// and sends generated media packets. Runs on the main thread.
struct Sender {
    let framing: Framing
    let sessions: Int
    let payloadBytes: Int
    let relayPort: UInt16
    let sinkPort: UInt16
    let socket: BatchSocket
    private var links: LinkManager<LoopbackPort>?
    private var relayNode: WalletAddress?
    private let sinkNode: WalletAddress?
    /// The relay's label for each session's packets (0 until the session is set up).
    private(set) var relayLabels: [UInt32]
    /// Each session's next data message (its framing around its packet), stamped in place before each send.
    private var messages: [[UInt8]] = []
    private var directMessage: [UInt8] = []
    /// Packets prepared so far per session, and of the baseline stream (the next packet number).
    private var prepared: [UInt32]
    private var directPrepared: UInt32 = 0
    private(set) var refusals: [String: Int] = [:]
    private(set) var teardowns = 0
    /// Each session's current chain id (the next one after a refusal) and when its set-up is sent again.
    private var chainOf: [UInt32]
    private var resendAt: [Int: Int] = [:]
    private var nextTick = 0
    /// With trunking, the trunks of data messages to the relay (the mini-frame contexts of every session).
    private var trunks: TrunkEncoder?
    /// Acknowledged table size of the C relay.
    private var plainInstalled = 0
    /// TURN: each session's socket and allocation.
    private var turn: TurnSessions?

    init(fd: Int32, framing: Framing, sessions: Int, payloadBytes: Int, relayPort: UInt16, sinkPort: UInt16, trunking: Bool) {
        trunks = trunking ? TrunkEncoder() : nil
        self.framing = framing
        self.sessions = sessions
        self.payloadBytes = payloadBytes
        self.relayPort = relayPort
        self.sinkPort = sinkPort
        socket = BatchSocket(fd: fd)
        relayLabels = Array(repeating: 0, count: sessions)
        prepared = Array(repeating: 0, count: sessions)
        chainOf = Array(repeating: 0, count: sessions)
        if case .mesh(let sender, let sink) = framing {
            links = LinkManager(identity: sender)
            sinkNode = sink.address
        } else {
            sinkNode = nil
        }
    }

    var sessionsUp: Int { relayLabels.reduce(0) { $0 + ($1 == 0 ? 0 : 1) } }

    /// TURN: each session's relayed port (empty before the set-up and for other relays).
    var relayedPorts: [UInt16] { turn?.relayedPorts ?? [] }

    /// Datagrams the kernel refused to send.
    var sendErrors: Int { socket.sendErrors + (turn?.sendErrors ?? 0) }

    // MARK: links and set-up

    /// Mesh: links to the relay (unpinned: it tells its address) and to the sink, and waits until both are up and
    /// the sink's own link to the relay too. Throws after `timeoutNs`.
    mutating func link(shared: Shared, timeoutNs: Int) throws {
        guard links != nil else { return }
        let now = wallMs()
        perform(links!.connect(to: LoopbackPort(port: relayPort), pinned: nil, now: now))
        perform(links!.connect(to: LoopbackPort(port: sinkPort), pinned: sinkNode, now: now))
        let deadline = monotonicNs() + timeoutNs
        while monotonicNs() < deadline {
            pump(timeoutNs: 5_000_000)
            if let relayNode, links!.isUp(relayNode), links!.isUp(sinkNode!), shared.sinkLinked.load(ordering: .acquiring) { return }
        }
        throw LoadError(description: "links not up after \(timeoutNs / 1_000_000_000) s (relay: \(relayNode.map { links!.isUp($0) } ?? false), "
                        + "sink: \(links!.isUp(sinkNode!)), sink to relay: \(shared.sinkLinked.load(ordering: .acquiring)))")
    }

    /// Sets up every session (mesh: signed chain set-ups, at most `window` outstanding, re-sent after 2 s, a refused
    /// one tried again with the next chain id after 100 ms; plain: the C relay's label table; TURN: `TurnSessions`,
    /// which throws unless all are up). Returns when all are up or after `timeoutNs`.
    mutating func setUp(window: Int, timeoutNs: Int) throws {
        messages = (0..<sessions).map { framing.message(label: 0, inner: MediaPacket.template(session: $0, payloadBytes: payloadBytes)) }
        directMessage = framing.direct.message(label: Labels.direct, inner: MediaPacket.template(session: sessions, payloadBytes: payloadBytes))
        let deadline = monotonicNs() + timeoutNs
        switch framing {
        case .plain:
            while plainInstalled < sessions && monotonicNs() < deadline {
                installPlainTable()
                let wait = monotonicNs() + 500_000_000
                while plainInstalled < sessions && monotonicNs() < wait { pump(timeoutNs: 5_000_000) }
            }
            if plainInstalled >= sessions { relayLabels = (0..<sessions).map(Labels.plainRelay) }
            return
        case .turn:
            let turn = try TurnSessions(sessions: sessions, server: relayPort)
            self.turn = turn
            try turn.setUp(peer: StunAddress(ip: [127, 0, 0, 1], port: sinkPort)!, window: window, timeoutNs: timeoutNs)
            relayLabels = Array(repeating: UInt32(TurnSessions.channel), count: sessions)
            return
        case .mesh: break
        }
        let wallet = PrivateKey()
        var next = 0
        while sessionsUp < sessions && monotonicNs() < deadline {
            let now = monotonicNs()
            for (i, due) in resendAt where relayLabels[i] != 0 || due <= now {
                if relayLabels[i] != 0 {
                    resendAt[i] = nil
                } else {
                    sendSetup(i, wallet: wallet)
                    resendAt[i] = now + 2_000_000_000
                }
            }
            while resendAt.count < window && next < sessions {
                sendSetup(next, wallet: wallet)
                resendAt[next] = now + 2_000_000_000
                next += 1
            }
            pump(timeoutNs: 1_000_000)
        }
    }

    private mutating func sendSetup(_ i: Int, wallet: PrivateKey) {
        let setup = ChainMessage.Setup.sign(key: ChainKey(call: UInt64(i), chain: chainOf[i]), wallet: wallet, target: sinkNode!,
                                            expiresAtMs: UInt64(wallMs() + 30_000), hopLimit: 6, backLabel: Labels.senderBase + UInt32(i),
                                            path: [links!.localAddress], avoid: [])
        perform(links!.send(ChainMessage.setup(setup).serialize(), to: relayNode!, now: wallMs()))
    }

    /// The C relay's table: control datagrams `[0xFF 'C' 'T' 'L'][sink port u16][count u16][(relay label u32, sink label u32) × count]`.
    private mutating func installPlainTable() {
        let chunk = 128
        for start in stride(from: 0, to: sessions, by: chunk) {
            let count = min(chunk, sessions - start)
            var bytes: [UInt8] = [0xFF, 0x43, 0x54, 0x4C, 0, 0, 0, 0]
            put(sinkPort, in: &bytes, at: 4)
            put(UInt16(count), in: &bytes, at: 6)
            for i in start..<start + count {
                bytes += [0, 0, 0, 0, 0, 0, 0, 0]
                put(Labels.plainRelay(i), in: &bytes, at: bytes.count - 8)
                put(Labels.sinkBase + UInt32(i), in: &bytes, at: bytes.count - 4)
            }
            socket.queue(bytes, to: relayPort)
        }
        socket.flush()
    }

    // MARK: receiving

    /// Reads what arrived (waiting up to `timeoutNs`), answers the link layer, and ticks it every 100 ms.
    mutating func pump(timeoutNs: Int) {
        let count = socket.receive(timeoutNs: timeoutNs)
        if count > 0 {
            let now = wallMs()
            for i in 0..<count {
                let datagram = socket.datagram(i)
                if links != nil {
                    perform(links!.receive(datagram, from: LoopbackPort(port: socket.source(i)), now: now))
                } else if datagram.count == 8, datagram.starts(with: [0xFF, 0x41, 0x43, 0x4B]) {
                    datagram.withUnsafeBytes { plainInstalled = max(plainInstalled, Int(get(UInt32.self, $0, at: 4))) }
                }
            }
        }
        let nowNs = monotonicNs()
        if links != nil, nowNs >= nextTick {
            perform(links!.tick(now: wallMs()))
            nextTick = nowNs + 100_000_000
        }
        socket.flush()
    }

    private mutating func perform(_ actions: [LinkAction<LoopbackPort>]) {
        for action in actions {
            switch action {
            case .send(let bytes, let to): socket.queue(bytes, to: to.port)
            case .deliver(let payload, _): receive(linkPayload: payload)
            case .up(let node, let endpoint) where endpoint.port == relayPort: relayNode = node
            default: break
            }
        }
    }

    /// Chain answers from the relay: accepts (its label for the session), refusals (tried again), teardowns.
    private mutating func receive(linkPayload payload: [UInt8]) {
        switch ChainMessage(parsing: payload) {
        case .accept(let key, let label, _)? where key.call < UInt64(sessions) && key.chain == chainOf[Int(key.call)]:
            relayLabels[Int(key.call)] = label
        case .refuse(let key, let reason, _)? where key.call < UInt64(sessions) && key.chain == chainOf[Int(key.call)]:
            refusals[reason.description, default: 0] += 1
            chainOf[Int(key.call)] += 1
            resendAt[Int(key.call)] = monotonicNs() + 100_000_000
        case .teardown(let key, _)? where key.call < UInt64(sessions) && key.chain == chainOf[Int(key.call)]:
            teardowns += 1
            relayLabels[Int(key.call)] = 0
        default: break
        }
    }

    // MARK: sending

    /// The datagrams of one group of packets sent together: the next packet of each listed session that is set up
    /// (`Sender.direct`: of the baseline stream to the sink), stamped with their scheduled send time, `offsetNs` after
    /// the traffic phase starts. Made before the traffic phase (mesh: sealed on the links then, so the sender's own
    /// crypto does not limit the rate it offers; the links are not ticked while the pool is sent, so the link counters
    /// stay in order).
    mutating func prepare<S: Sequence<Int>>(_ list: S, offsetNs: Int) -> Group {
        var relayed: [Message] = [], direct: [Message] = []
        for i in list {
            if i == Self.direct {
                MediaPacket.stamp(&directMessage, at: framing.direct.innerOffset, number: directPrepared, offsetNs: offsetNs)
                directPrepared += 1
                direct.append(Message(session: i, bytes: directMessage))
            } else if relayLabels[i] != 0 {
                framing.set(label: relayLabels[i], in: &messages[i])
                MediaPacket.stamp(&messages[i], at: framing.innerOffset, number: prepared[i], offsetNs: offsetNs)
                prepared[i] += 1
                relayed.append(Message(session: i, bytes: messages[i]))
            }
        }
        return Group(offsetNs: offsetNs, datagrams: transmit(messages: relayed, to: .relay) + transmit(messages: direct, to: .sink),
                     relayed: relayed.count, direct: direct.count)
    }

    /// The session index `prepare` takes for the baseline stream.
    static let direct = -1

    /// Every data message the sender sends goes through here (the place a trunk encoder packs them into trunk
    /// payloads): the datagrams that carry them to `hop` (mesh: sealed on the link; plain: as they are; TURN: each
    /// on its session's own socket).
    mutating func transmit(messages: [Message], to hop: Hop) -> [Datagram] {
        guard !messages.isEmpty else { return [] }
        if turn != nil, hop == .relay { return messages.map { Datagram(bytes: $0.bytes, to: .session($0.session)) } }
        let port = hop == .relay ? relayPort : sinkPort
        guard links != nil else { return messages.map { Datagram(bytes: $0.bytes, to: .port(port)) } }
        let node = hop == .relay ? relayNode! : sinkNode!
        let now = wallMs()
        var payloads = messages.map(\.bytes)
        // A batch leaves together: the messages to the relay in as few trunks as fit (the direct baseline stream stays
        // per packet, so that it measures the path, not trunking).
        if hop == .relay, var encoder = trunks {
            payloads = payloads.compactMap { encoder.append($0) }
            if let last = encoder.finish() { payloads.append(last) }
            trunks = encoder
        }
        var datagrams: [Datagram] = []
        datagrams.reserveCapacity(payloads.count)
        for payload in payloads {
            for case .send(let bytes, let to) in links!.send(payload, to: node, now: now) { datagrams.append(Datagram(bytes: bytes, to: .port(to.port))) }
        }
        return datagrams
    }

    /// Sends a prepared group (on the sender's socket queued: `socket.flush()` sends what is queued; on a TURN
    /// session's socket at once, one datagram a socket).
    func send(_ group: Group) {
        for datagram in group.datagrams {
            switch datagram.to {
            case .port(let port): socket.queue(datagram.bytes, to: port)
            case .session(let session): turn?.send(datagram.bytes, session: session)
            }
        }
    }
}

/// A data message of one session (`Sender.direct`: of the baseline stream).
struct Message {
    let session: Int
    let bytes: [UInt8]
}

/// A UDP datagram and the way it leaves.
struct Datagram {
    enum Route {
        /// From the sender's socket to 127.0.0.1:port (the relay or the sink).
        case port(UInt16)
        /// From the session's own socket, connected to the TURN server.
        case session(Int)
    }

    let bytes: [UInt8]
    let to: Route
}

/// Packets sent together, made by `Sender.prepare`: how many go through the relay and to the sink directly.
struct Group {
    let offsetNs: Int
    let datagrams: [Datagram]
    let relayed: Int
    let direct: Int
}
