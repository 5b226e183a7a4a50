import MeshIdentity
import MeshWire

/// Timers and limits of the link layer (docs/links.md explains each).
public struct LinkConfig: Sendable {
    /// First retry of an unanswered handshake; doubles per attempt up to `handshakeBackoffMaxMs`.
    public var handshakeRetryMs: Int64 = 1_000
    public var handshakeBackoffMaxMs: Int64 = 8_000
    /// Ping interval; pings double as keepalives and feed the RTT and loss estimates.
    public var pingIntervalMs: Int64 = 1_000
    /// A ping without a pong after this long counts as lost.
    public var pingTimeoutMs: Int64 = 3_000
    /// A link that received nothing for this long is down.
    public var deadAfterMs: Int64 = 10_000
    /// The initiator of a session starts a new handshake when the session is this old.
    public var rekeyAfterMs: Int64 = 120_000
    /// No session is used after this age.
    public var rejectAfterMs: Int64 = 180_000
    /// Handshake initiations whose timestamp is further than this from `now` are refused (replay guard).
    public var initClockSkewMs: Int64 = 120_000
    /// How many ping outcomes the loss estimate looks at.
    public var lossWindow = 20

    public init() {}
}

/// What the shell must do after an input.
public enum LinkAction<Address: Hashable & Sendable>: Sendable {
    case send([UInt8], to: Address)
    case deliver([UInt8], from: WalletAddress)
    case up(WalletAddress, Address)
    case down(WalletAddress, reason: String)
    case refused(Address, reason: String)
}

/// Datagrams dropped or refused, by reason; and totals.
public struct LinkCounters: Sendable, Codable, Equatable {
    public var malformed = 0
    public var unknownSession = 0
    public var authFailed = 0
    public var replayed = 0
    public var handshakeRefused = 0
    public var pinMismatch = 0
    public var packetsIn = 0
    public var packetsOut = 0
    public var bytesIn = 0
    public var bytesOut = 0
    public init() {}

    /// Every datagram dropped for any reason.
    public var dropped: Int { malformed + unknownSession + authFailed + replayed + handshakeRefused + pinMismatch }
}

/// One neighbour as `node-ctl peers` shows it.
public struct PeerInfo: Sendable, Codable, Equatable {
    public var address: String
    public var endpoint: String
    public var state: String
    public var rttMs: Double?
    public var rttVarMs: Double?
    public var lossPercent: Double
    public var packetsIn: Int
    public var packetsOut: Int
    public var bytesIn: Int
    public var bytesOut: Int
    public var lastSeenMsAgo: Int64?
    public var sessionAgeMs: Int64?
    public var pinned: Bool
}

struct Session {
    let localIndex: UInt32
    let remoteIndex: UInt32
    let sendKey: [UInt8]
    let receiveKey: [UInt8]
    let createdAt: Int64
    let isInitiator: Bool
    var sendCounter: UInt64 = 0
    var replay = ReplayWindow()
}

struct PendingInit<Address: Hashable & Sendable> {
    let endpoint: Address
    let expected: WalletAddress?
    let secret: [UInt8]
    let message: [UInt8]
    let expiresAt: Int64
}

struct Peer<Address: Hashable & Sendable> {
    let address: WalletAddress
    /// The node key the peer proved in its handshake.
    let publicKey: PublicKey
    var endpoint: Address
    var current: Session?
    var unconfirmed: Session?
    var previous: Session?
    var lastInitTimestamp: UInt64 = 0
    var lastReceivedAt: Int64
    var up = false
    var rekeyIndex: UInt32?
    var srttMs: Double?
    var rttVarMs: Double?
    var outstandingPings: [UInt32: Int64] = [:]
    var pingOutcomes: [Bool] = []
    var nextPingId: UInt32 = 1
    var nextPingAt: Int64 = 0
    var packetsIn = 0
    var packetsOut = 0
    var bytesIn = 0
    var bytesOut = 0

    init(publicKey: PublicKey, endpoint: Address, now: Int64) {
        self.address = publicKey.address
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.lastReceivedAt = now
    }

    var sessions: [Session] { [current, unconfirmed, previous].compactMap { $0 } }
}

struct Dial<Address: Hashable & Sendable> {
    let endpoint: Address
    let pinned: WalletAddress?
    /// The node that answered this dial last (it may reply from another address than the one dialled).
    var peer: WalletAddress?
    var pendingIndex: UInt32?
    var attempts = 0
    var nextAttemptAt: Int64
}

/// The link layer of one node, sans-IO: authenticated, encrypted links to neighbours over one UDP port.
/// Inputs are datagrams, application payloads and ticks with `now` (wall-clock milliseconds, used for the
/// handshake's replay timestamps); outputs are `LinkAction`s. See docs/links.md for the protocol.
public struct LinkManager<Address: Hashable & Sendable & CustomStringConvertible>: Sendable {
    public let identity: PrivateKey
    public let localAddress: WalletAddress
    public let config: LinkConfig
    public private(set) var counters = LinkCounters()

    private var peers: [WalletAddress: Peer<Address>] = [:]
    private var sessionOwners: [UInt32: WalletAddress] = [:]
    private var pending: [UInt32: PendingInit<Address>] = [:]
    private var dials: [Address: Dial<Address>] = [:]

    public init(identity: PrivateKey, config: LinkConfig = LinkConfig()) {
        self.identity = identity
        self.localAddress = identity.address
        self.config = config
    }

    // MARK: inputs

    /// Keeps a link to `endpoint` up (dialling now and after every loss). With `pinned`, only that node key is accepted.
    public mutating func connect(to endpoint: Address, pinned: WalletAddress?, now: Int64) -> [LinkAction<Address>] {
        dials[endpoint] = Dial(endpoint: endpoint, pinned: pinned, nextAttemptAt: now)
        return tick(now: now)
    }

    /// One handshake to `endpoint` (for a call to a node that is not a neighbour); unlike `connect`, the link
    /// is not re-dialled when it dies, and a dial configured for that endpoint is left as it is.
    public mutating func dialOnce(_ endpoint: Address, pinned: WalletAddress, now: Int64) -> [LinkAction<Address>] {
        [startHandshake(to: endpoint, expected: pinned, now: now, lifetime: config.handshakeRetryMs).1]
    }

    /// Encrypts an application payload to a neighbour whose link is up. Returns no action when it is not.
    public mutating func send(_ payload: [UInt8], to address: WalletAddress, now: Int64) -> [LinkAction<Address>] {
        guard var peer = peers[address], peer.up, peer.current != nil else { return [] }
        let action = seal(&peer, inner: .application, body: payload, now: now)
        peers[address] = peer
        return action.map { [$0] } ?? []
    }

    /// Tells every neighbour this node is going away and takes all links down.
    public mutating func closeAll(now: Int64) -> [LinkAction<Address>] {
        var actions: [LinkAction<Address>] = []
        for address in peers.keys.sorted() {
            guard var peer = peers[address], peer.up else { continue }
            if let close = seal(&peer, inner: .close, body: [], now: now) { actions.append(close) }
            markDown(&peer, reason: "closed", actions: &actions)
            peers[address] = peer
        }
        dials = [:]
        return actions
    }

    /// One datagram from the UDP port.
    public mutating func receive(_ datagram: [UInt8], from source: Address, now: Int64) -> [LinkAction<Address>] {
        counters.packetsIn += 1
        counters.bytesIn += datagram.count
        switch datagram.first.flatMap(LinkMessageType.init(rawValue:)) {
        case .handshakeInit: return receiveInit(datagram, from: source, now: now)
        case .handshakeResponse: return receiveResponse(datagram, from: source, now: now)
        case .transport: return receiveTransport(datagram, from: source, now: now)
        case nil:
            counters.malformed += 1
            return []
        }
    }

    /// Timers: handshake retries, pings, dead links, rekeying. Call at least every `pingIntervalMs`.
    public mutating func tick(now: Int64) -> [LinkAction<Address>] {
        var actions: [LinkAction<Address>] = []
        for (index, p) in pending where p.expiresAt <= now {
            pending[index] = nil
        }
        for address in Array(peers.keys) {
            guard var peer = peers[address] else { continue }
            tickPeer(&peer, now: now, actions: &actions)
            // A peer that is down with no session left is forgotten after `rejectAfterMs`: nodes that only
            // sent an initiation must not accumulate. (Replays of its initiation are then older than the
            // accepted clock skew, which is shorter.)
            let idle = !peer.up && peer.sessions.isEmpty && now - peer.lastReceivedAt >= config.rejectAfterMs
            peers[address] = idle ? nil : peer
        }
        for endpoint in Array(dials.keys) {
            guard var dial = dials[endpoint] else { continue }
            if let index = dial.pendingIndex, pending[index] == nil { dial.pendingIndex = nil }
            let connected = dial.peer.map { peers[$0]?.up ?? false } ?? false
            if connected {
                dial.attempts = 0
            } else if dial.pendingIndex == nil, now >= dial.nextAttemptAt {
                let backoff = min(config.handshakeRetryMs << Int64(min(dial.attempts, 16)), config.handshakeBackoffMaxMs)
                dial.attempts += 1
                dial.nextAttemptAt = now + backoff
                let (index, action) = startHandshake(to: endpoint, expected: dial.pinned, now: now, lifetime: backoff)
                dial.pendingIndex = index
                actions.append(action)
            }
            dials[endpoint] = dial
        }
        return actions
    }

    // MARK: queries

    public func isUp(_ address: WalletAddress) -> Bool { peers[address]?.up ?? false }

    public var upPeers: [WalletAddress] { peers.values.filter(\.up).map(\.address).sorted() }

    /// Smoothed RTT (nil before the first pong) and ping loss of a neighbour whose link is up.
    public func quality(_ address: WalletAddress) -> (rttMs: Double?, lossPercent: Double)? {
        guard let peer = peers[address], peer.up else { return nil }
        return (peer.srttMs, Self.lossPercent(peer.pingOutcomes))
    }

    /// The node key and current endpoint of a neighbour whose link is up.
    public func upPeer(_ address: WalletAddress) -> (publicKey: PublicKey, endpoint: Address)? {
        guard let peer = peers[address], peer.up else { return nil }
        return (peer.publicKey, peer.endpoint)
    }

    /// Every known neighbour and every dial still connecting; `describe` renders endpoints.
    public func peerInfos(now: Int64, describe: (Address) -> String = { $0.description }) -> [PeerInfo] {
        var infos = peers.values.sorted { $0.address < $1.address }.map { peer in
            PeerInfo(
                address: peer.address.checksummed, endpoint: describe(peer.endpoint),
                state: peer.up ? "up" : "down", rttMs: peer.srttMs, rttVarMs: peer.rttVarMs,
                lossPercent: Self.lossPercent(peer.pingOutcomes),
                packetsIn: peer.packetsIn, packetsOut: peer.packetsOut, bytesIn: peer.bytesIn, bytesOut: peer.bytesOut,
                lastSeenMsAgo: now - peer.lastReceivedAt, sessionAgeMs: peer.current.map { now - $0.createdAt },
                pinned: dials.values.contains { $0.pinned == peer.address })
        }
        for dial in dials.values where dial.peer.map({ peers[$0] == nil }) ?? true {
            infos.append(PeerInfo(
                address: dial.pinned?.checksummed ?? "?", endpoint: describe(dial.endpoint), state: "connecting",
                lossPercent: 0, packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, pinned: dial.pinned != nil))
        }
        return infos
    }

    // MARK: handshake

    private mutating func startHandshake(to endpoint: Address, expected: WalletAddress?, now: Int64, lifetime: Int64)
        -> (UInt32, LinkAction<Address>)
    {
        let index = freshIndex()
        let (secret, ephemeral) = LinkCrypto.ephemeralKeyPair()
        let signed = HandshakeInit.signedPart(senderIndex: index, ephemeral: ephemeral, timestampMs: UInt64(max(now, 0)))
        let signature = identity.sign(digest: HandshakeInit.digest(signedPart: signed))
        let message = signed + signature.bytes
        pending[index] = PendingInit(endpoint: endpoint, expected: expected, secret: secret, message: message,
                                     expiresAt: now + max(lifetime, config.handshakeRetryMs))
        return (index, outbound(message, to: endpoint))
    }

    private mutating func receiveInit(_ datagram: [UInt8], from source: Address, now: Int64) -> [LinkAction<Address>] {
        guard let message = HandshakeInit(parsing: datagram),
              let initiatorKey = message.signature.recoverPublicKey(digest: HandshakeInit.digest(signedPart: message.signedPart))
        else {
            counters.malformed += 1
            return []
        }
        let initiator = initiatorKey.address
        if let pin = dials[source]?.pinned, pin != initiator {
            counters.pinMismatch += 1
            return [.refused(source, reason: "pinned to \(pin) but \(initiator) answered")]
        }
        let skew = Int64(clamping: message.timestampMs) - now
        guard initiator != localAddress, abs(skew) <= config.initClockSkewMs,
              message.timestampMs > (peers[initiator]?.lastInitTimestamp ?? 0)
        else {
            counters.handshakeRefused += 1
            return []
        }
        let (secret, ephemeral) = LinkCrypto.ephemeralKeyPair()
        guard let shared = LinkCrypto.sharedSecret(secret: secret, peerPublic: message.ephemeral) else {
            counters.handshakeRefused += 1
            return []
        }
        let index = freshIndex()
        let signed = HandshakeResponse.signedPart(senderIndex: index, receiverIndex: message.senderIndex, ephemeral: ephemeral)
        let signature = identity.sign(digest: HandshakeResponse.digest(initMessage: datagram, signedPart: signed))
        let keys = Self.sessionKeys(shared: shared, initMessage: datagram, responseSignedPart: signed)
        var peer = peers[initiator] ?? Peer(publicKey: initiatorKey, endpoint: source, now: now)
        peer.lastInitTimestamp = message.timestampMs
        if let old = peer.unconfirmed { sessionOwners[old.localIndex] = nil }
        peer.unconfirmed = Session(localIndex: index, remoteIndex: message.senderIndex, sendKey: keys.responderToInitiator,
                                   receiveKey: keys.initiatorToResponder, createdAt: now, isInitiator: false)
        sessionOwners[index] = initiator
        peer.endpoint = source
        peers[initiator] = peer
        return [outbound(signed + signature.bytes, to: source)]
    }

    private mutating func receiveResponse(_ datagram: [UInt8], from source: Address, now: Int64) -> [LinkAction<Address>] {
        guard let message = HandshakeResponse(parsing: datagram) else {
            counters.malformed += 1
            return []
        }
        guard let initState = pending[message.receiverIndex] else {
            counters.unknownSession += 1
            return []
        }
        let digest = HandshakeResponse.digest(initMessage: initState.message, signedPart: message.signedPart)
        guard let responderKey = message.signature.recoverPublicKey(digest: digest), responderKey.address != localAddress,
              let shared = LinkCrypto.sharedSecret(secret: initState.secret, peerPublic: message.ephemeral)
        else {
            counters.handshakeRefused += 1
            return []
        }
        let responder = responderKey.address
        if let expected = initState.expected, expected != responder {
            counters.pinMismatch += 1
            pending[message.receiverIndex] = nil
            return [.refused(source, reason: "pinned to \(expected) but \(responder) answered")]
        }
        pending[message.receiverIndex] = nil
        if dials[initState.endpoint]?.pendingIndex == message.receiverIndex { dials[initState.endpoint]?.peer = responder }
        let keys = Self.sessionKeys(shared: shared, initMessage: initState.message, responseSignedPart: message.signedPart)
        var peer = peers[responder] ?? Peer(publicKey: responderKey, endpoint: source, now: now)
        let session = Session(localIndex: message.receiverIndex, remoteIndex: message.senderIndex,
                              sendKey: keys.initiatorToResponder, receiveKey: keys.responderToInitiator,
                              createdAt: now, isInitiator: true)
        sessionOwners[message.receiverIndex] = responder
        peer.rekeyIndex = nil
        peer.endpoint = source
        peer.lastReceivedAt = now
        var actions: [LinkAction<Address>] = []
        install(session, in: &peer, now: now, actions: &actions)
        // The first transport packet confirms the session to the responder.
        if let confirm = seal(&peer, inner: .keepalive, body: [], now: now) { actions.append(confirm) }
        peers[responder] = peer
        return actions
    }

    private static func sessionKeys(shared: [UInt8], initMessage: [UInt8], responseSignedPart: [UInt8])
        -> (initiatorToResponder: [UInt8], responderToInitiator: [UInt8])
    {
        let material = LinkCrypto.hash(LinkWire.keysLabel + initMessage + responseSignedPart, key: shared, length: 64)
        return (Array(material[0..<32]), Array(material[32..<64]))
    }

    private mutating func install(_ session: Session, in peer: inout Peer<Address>, now: Int64, actions: inout [LinkAction<Address>]) {
        if let old = peer.previous { sessionOwners[old.localIndex] = nil }
        peer.previous = peer.current
        peer.current = session
        if !peer.up {
            peer.up = true
            peer.nextPingAt = now
            actions.append(.up(peer.address, peer.endpoint))
        }
    }

    // MARK: transport

    private mutating func receiveTransport(_ datagram: [UInt8], from source: Address, now: Int64) -> [LinkAction<Address>] {
        guard datagram.count >= LinkWire.transportMinBytes else {
            counters.malformed += 1
            return []
        }
        var reader = ByteReader(datagram, offset: 1)
        guard let index = reader.readUInt32(), let counter = reader.readUInt64() else {
            counters.malformed += 1
            return []
        }
        guard let owner = sessionOwners[index], var peer = peers[owner] else {
            counters.unknownSession += 1
            return []
        }
        let slot: WritableKeyPath<Peer<Address>, Session?>
        if peer.current?.localIndex == index {
            slot = \.current
        } else if peer.unconfirmed?.localIndex == index {
            slot = \.unconfirmed
        } else if peer.previous?.localIndex == index {
            slot = \.previous
        } else {
            counters.unknownSession += 1
            return []
        }
        guard var session = peer[keyPath: slot], now - session.createdAt < config.rejectAfterMs else {
            counters.unknownSession += 1
            return []
        }
        guard counter < LinkWire.counterLimit, session.replay.wouldAccept(counter) else {
            counters.replayed += 1
            return []
        }
        let header = datagram[0..<LinkWire.transportHeaderBytes]
        guard let plaintext = LinkCrypto.open(key: session.receiveKey, counter: counter, header: header,
                                              ciphertext: datagram[LinkWire.transportHeaderBytes...])
        else {
            counters.authFailed += 1
            return []
        }
        _ = session.replay.accept(counter)
        var actions: [LinkAction<Address>] = []
        if slot == \.unconfirmed {
            peer.unconfirmed = nil
            install(session, in: &peer, now: now, actions: &actions)
        } else {
            peer[keyPath: slot] = session
        }
        peer.endpoint = source
        peer.lastReceivedAt = now
        peer.packetsIn += 1
        peer.bytesIn += datagram.count
        handleInner(plaintext, peer: &peer, now: now, actions: &actions)
        peers[owner] = peer
        return actions
    }

    private mutating func handleInner(_ plaintext: [UInt8], peer: inout Peer<Address>, now: Int64, actions: inout [LinkAction<Address>]) {
        guard let type = plaintext.first.flatMap(InnerType.init(rawValue:)) else {
            counters.malformed += 1
            return
        }
        var reader = ByteReader(plaintext, offset: 1)
        switch type {
        case .keepalive:
            break
        case .close:
            markDown(&peer, reason: "closed by peer", actions: &actions)
        case .ping:
            guard let id = reader.readUInt32() else {
                counters.malformed += 1
                return
            }
            var w = ByteWriter(capacity: 4)
            w.write(id)
            if let pong = seal(&peer, inner: .pong, body: w.bytes, now: now) { actions.append(pong) }
        case .pong:
            guard let id = reader.readUInt32(), let sentAt = peer.outstandingPings.removeValue(forKey: id) else { return }
            let sample = Double(now - sentAt)
            if let srtt = peer.srttMs, let rttVar = peer.rttVarMs {
                peer.rttVarMs = 0.75 * rttVar + 0.25 * abs(srtt - sample)
                peer.srttMs = 0.875 * srtt + 0.125 * sample
            } else {
                peer.srttMs = sample
                peer.rttVarMs = sample / 2
            }
            record(outcome: true, in: &peer)
        case .application:
            actions.append(.deliver(Array(plaintext[1...]), from: peer.address))
        }
    }

    private mutating func seal(_ peer: inout Peer<Address>, inner: InnerType, body: [UInt8], now: Int64) -> LinkAction<Address>? {
        guard var session = peer.current, session.sendCounter < LinkWire.counterLimit else { return nil }
        var header = ByteWriter(capacity: LinkWire.transportHeaderBytes)
        header.write(LinkMessageType.transport.rawValue)
        header.write(session.remoteIndex)
        header.write(session.sendCounter)
        session.sendCounter += 1
        peer.current = session
        var plaintext = [UInt8]()
        plaintext.reserveCapacity(body.count + 1)
        plaintext.append(inner.rawValue)
        plaintext.append(contentsOf: body)
        let datagram = LinkCrypto.seal(key: session.sendKey, counter: session.sendCounter - 1, header: header.bytes, plaintext: plaintext)
        peer.packetsOut += 1
        peer.bytesOut += datagram.count
        return outbound(datagram, to: peer.endpoint)
    }

    private mutating func outbound(_ datagram: [UInt8], to endpoint: Address) -> LinkAction<Address> {
        counters.packetsOut += 1
        counters.bytesOut += datagram.count
        return .send(datagram, to: endpoint)
    }

    // MARK: timers

    private mutating func tickPeer(_ peer: inout Peer<Address>, now: Int64, actions: inout [LinkAction<Address>]) {
        for s in [peer.previous, peer.unconfirmed].compactMap({ $0 }) where now - s.createdAt >= config.rejectAfterMs {
            sessionOwners[s.localIndex] = nil
            if peer.previous?.localIndex == s.localIndex { peer.previous = nil } else { peer.unconfirmed = nil }
        }
        guard peer.up, let current = peer.current else { return }
        let age = now - current.createdAt
        if now - peer.lastReceivedAt >= config.deadAfterMs || age >= config.rejectAfterMs {
            markDown(&peer, reason: age >= config.rejectAfterMs ? "session expired" : "no traffic for \(config.deadAfterMs / 1000) s",
                     actions: &actions)
            return
        }
        for (id, sentAt) in peer.outstandingPings where now - sentAt >= config.pingTimeoutMs {
            peer.outstandingPings[id] = nil
            record(outcome: false, in: &peer)
        }
        if now >= peer.nextPingAt {
            let id = peer.nextPingId
            peer.nextPingId &+= 1
            peer.outstandingPings[id] = now
            peer.nextPingAt = now + config.pingIntervalMs
            var w = ByteWriter(capacity: 4)
            w.write(id)
            if let ping = seal(&peer, inner: .ping, body: w.bytes, now: now) { actions.append(ping) }
        }
        // The initiator rekeys on time; the responder only if the initiator has not (for example after a restart).
        let rekeyAt = current.isInitiator ? config.rekeyAfterMs : config.rekeyAfterMs + (config.rejectAfterMs - config.rekeyAfterMs) / 2
        let rekeyPending = peer.rekeyIndex.map { pending[$0] != nil } ?? false
        if age >= rekeyAt, !rekeyPending {
            let (index, action) = startHandshake(to: peer.endpoint, expected: peer.address, now: now, lifetime: config.handshakeRetryMs)
            peer.rekeyIndex = index
            actions.append(action)
        }
    }

    private mutating func markDown(_ peer: inout Peer<Address>, reason: String, actions: inout [LinkAction<Address>]) {
        for s in peer.sessions { sessionOwners[s.localIndex] = nil }
        peer.current = nil
        peer.unconfirmed = nil
        peer.previous = nil
        peer.up = false
        peer.outstandingPings = [:]
        actions.append(.down(peer.address, reason: reason))
    }

    private func record(outcome: Bool, in peer: inout Peer<Address>) {
        peer.pingOutcomes.append(outcome)
        if peer.pingOutcomes.count > config.lossWindow { peer.pingOutcomes.removeFirst() }
    }

    private static func lossPercent(_ outcomes: [Bool]) -> Double {
        guard !outcomes.isEmpty else { return 0 }
        return 100 * Double(outcomes.filter { !$0 }.count) / Double(outcomes.count)
    }

    private func freshIndex() -> UInt32 {
        while true {
            let index = SecureRandom.uint32()
            if index != 0, sessionOwners[index] == nil, pending[index] == nil { return index }
        }
    }
}
