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
    /// Above this many initiations (with a valid mac1) per second, each must carry a valid mac2: a cookie the
    /// node gave the source's endpoint, which proves the source receives at that address.
    public var handshakesPerSecondUnderLoad = 32
    /// The secret cookies are made from is drawn anew this often (cookies of the previous one stay valid).
    public var cookieSecretLifetimeMs: Int64 = 120_000
    /// Handshake work (signature recovery and more) granted to one source host: a token bucket. Loopback and
    /// private addresses are counted too; the burst lets dozens of nodes on one host start at once.
    public var handshakesPerSecondPerSource: Double = 20
    public var handshakeBurstPerSource = 60
    /// How many source hosts the rate limit tracks at most; a new host beyond that is refused until some refill.
    public var rateLimitSources = 4_096
    /// A handshake the responder answered must be completed (an authentic transport datagram) within this time;
    /// until then the responder keeps only a bounded, half-open entry and no peer.
    public var halfOpenTimeoutMs: Int64 = 5_000
    public var halfOpenLimit = 1_024
    /// A clock-skew refusal is logged at most this often per endpoint (on both sides).
    public var refusalLogIntervalMs: Int64 = 60_000
    /// With a list, links form only with these node keys, both ways (a private mesh; `--allow-link`). Others'
    /// initiations are dropped and counted (`notAllowed`), as a firewall would.
    public var allowedPeers: Set<WalletAddress>?

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

/// What a datagram read in place (`receive(_:from:now:payload:)`) came to.
public enum LinkReceipt<Address: Hashable & Sendable> {
    /// An application payload from this neighbour, decrypted into the caller's buffer (no allocation).
    case payload(from: WalletAddress)
    /// Anything else, as `receive(_:from:now:)` returns it.
    case actions([LinkAction<Address>])
}

/// Where sealed datagrams can be written in place (the node's outbox), so a forwarded packet is never copied into
/// an array of its own.
public protocol DatagramSink<Address> {
    associatedtype Address
    /// Appends a datagram of `length` bytes for `address`; `write` fills exactly those bytes.
    mutating func append(length: Int, to address: Address, write: (UnsafeMutableRawBufferPointer) -> Void)
}

/// A sink for one datagram, made into a `LinkAction.send`.
struct OneDatagram<Address: Hashable & Sendable>: DatagramSink {
    var action: LinkAction<Address>?

    mutating func append(length: Int, to address: Address, write: (UnsafeMutableRawBufferPointer) -> Void) {
        let bytes = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            write(UnsafeMutableRawBufferPointer(buffer))
            count = length
        }
        action = .send(bytes, to: address)
    }
}

/// Datagrams dropped or refused, by reason; and totals.
public struct LinkCounters: Sendable, Codable, Equatable {
    public var malformed = 0
    public var unknownSession = 0
    public var authFailed = 0
    public var replayed = 0
    public var handshakeRefused = 0
    public var pinMismatch = 0
    /// Handshakes with nodes not on the link allow-list.
    public var notAllowed = 0
    /// Initiations whose mac1 is wrong (made without knowing this node's address): dropped before any other work.
    public var macFailed = 0
    /// Initiations naming another node as their responder (replayed or misdirected).
    public var wrongResponder = 0
    /// Initiations answered with a cookie instead of a response (under load, or not naming this node).
    public var cookieRequired = 0
    /// Initiations over their source's handshake rate, or beyond the half-open limit.
    public var rateLimited = 0
    /// Initiations refused for their timestamp (answered with a clock-skew refusal).
    public var clockSkew = 0
    /// Signature recoveries done for initiations (the expensive work the checks above protect).
    public var signatureRecoveries = 0
    public var packetsIn = 0
    public var packetsOut = 0
    public var bytesIn = 0
    public var bytesOut = 0
    public init() {}

    /// Every datagram dropped for any reason.
    public var dropped: Int {
        malformed + unknownSession + authFailed + replayed + handshakeRefused + pinMismatch + macFailed + wrongResponder
            + cookieRequired + rateLimited + clockSkew + notAllowed
    }
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
    /// Why the last handshake to this endpoint was refused (for example the clock skew the peer measured).
    public var refusal: String?
}

/// One session as its handshake made it. Once installed, its sending half is the link's (`UpLink.current`) and its
/// receiving half goes to the manager's table of receivers, by this node's index for the session.
struct Session {
    var sending: Sending
    var receiving: Receiving
}

/// What seals a link's datagrams: its current session's sending half.
struct Sending {
    let localIndex: UInt32
    let remoteIndex: UInt32
    let key: [UInt8]
    let createdAt: Int64
    let isInitiator: Bool
    var counter: UInt64 = 0
}

/// What opens the datagrams that name one of this node's session indexes: the session's receiving half, the node
/// it is with, and its replay window. A link's current session and the one it replaced each have one.
struct Receiving {
    let owner: WalletAddress
    let key: [UInt8]
    let createdAt: Int64
    var replay = ReplayWindow()
}

/// An initiation this node sent and awaits a response to.
struct PendingInit<Address: Hashable & Sendable> {
    let endpoint: Address
    let expected: WalletAddress?
    let secret: [UInt8]
    var message: HandshakeInit
    let expiresAt: Int64
    /// An initiation is re-sent with a cookie once at most, so two nodes cannot bounce cookies forever.
    var cookieTaken = false
}

/// A handshake this node answered as responder and the initiator has not completed yet: no peer exists for it.
struct HalfOpen<Address: LinkEndpoint> {
    let initiatorKey: PublicKey
    let endpoint: Address
    let initTimestamp: UInt64
    var session: Session
    let expiresAt: Int64
}

/// The last refusal of a handshake to an endpoint, for `node-ctl peers` and a rate-limited log line.
struct Refusal {
    let text: String
    let at: Int64
}

struct Peer<Address: Hashable & Sendable> {
    let address: WalletAddress
    /// The node key the peer proved in its handshake.
    let publicKey: PublicKey
    var endpoint: Address
    var link = LinkState.down
    var lastInitTimestamp: UInt64 = 0
    var lastReceivedAt: Int64
    var srttMs: Double?
    var rttVarMs: Double?
    var pingOutcomes: [Bool] = []
    /// Ping ids go on across sessions, so a late pong to a ping of an earlier session matches nothing.
    var nextPingId: UInt32 = 1
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

    var isUp: Bool {
        if case .up = link { true } else { false }
    }

}

/// A neighbour's link: down (no session: never up yet, closed, dead or expired), or up.
enum LinkState {
    case down
    case up(UpLink)

    /// Runs `body` on the link while it is up (nil when it is down). The link is moved out (consumed, not copied:
    /// no retain of its keys and windows) while `body` runs, so its replay windows and pings are changed in place,
    /// and moved back after.
    mutating func withUp<Result>(_ body: (inout UpLink) -> Result) -> Result? {
        guard case .up(var up) = consume self else {
            self = .down
            return nil
        }
        defer { self = .up(up) }
        return body(&up)
    }
}

/// What a link that is up holds: the session traffic is sealed with, the one it replaced (its receiving half still
/// opens datagrams until `rejectAfterMs` after it was made), this node's rekey under way, and the pings in flight.
/// Small: the receiving halves, with their replay windows, live in the manager's table of receivers.
struct UpLink {
    var current: Sending
    var previous: (index: UInt32, createdAt: Int64)?
    /// The index of this node's rekey handshake, while one runs.
    var rekeyIndex: UInt32?
    var outstandingPings: [UInt32: Int64] = [:]
    var nextPingAt: Int64

    init(current: Sending, now: Int64) {
        self.current = current
        nextPingAt = now
    }
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
/// Inputs are datagrams, application payloads and ticks with `now` (the node's monotonic clock, ms: every timer;
/// the handshake's signed timestamps are wall-clock time, `clock.wall(now)`); outputs are `LinkAction`s. See
/// docs/links.md for the protocol.
public struct LinkManager<Address: LinkEndpoint>: Sendable {
    public let identity: PrivateKey
    public let localAddress: WalletAddress
    public let config: LinkConfig
    public private(set) var counters = LinkCounters()
    /// The wall clock, for the timestamps handshakes sign and check (the shell keeps it current).
    public var clock = WallClock()

    private var peers: [WalletAddress: Peer<Address>] = [:]
    /// Session indexes, ephemeral keys and cookie secrets come from here.
    private let random: LinkRandom
    /// The receiving half of every installed session, by this node's index for it.
    private var receivers: [UInt32: Receiving] = [:]
    private var pending: [UInt32: PendingInit<Address>] = [:]
    private var halfOpen: [UInt32: HalfOpen<Address>] = [:]
    private var halfOpenByInitiator: [WalletAddress: UInt32] = [:]
    /// Half-open handshakes per source host (`rateLimitKey`), so a full table evicts from the host holding most.
    private var halfOpenPerSource: [[UInt8]: Int] = [:]
    private var dials: [Address: Dial<Address>] = [:]
    private var guardian: HandshakeGuard
    /// mac1's key for initiations to this node.
    private let ownMac1Key: [UInt8]
    /// Refusals this node received, by the endpoint that refused.
    private var refusals: [Address: Refusal] = [:]
    /// The log lines of clock-skew refusals this node gave, and of "pinned to X but Y answered", by endpoint.
    private var clockRefusalLog: RefusalLog<Address>
    private var pinRefusalLog: RefusalLog<Address>
    private static var refusalLogLimit: Int { 256 }

    public init(identity: PrivateKey, config: LinkConfig = LinkConfig(), random: LinkRandom = .secure) {
        self.identity = identity
        self.random = random
        self.localAddress = identity.address
        self.config = config
        guardian = HandshakeGuard(config: config, random: random)
        ownMac1Key = HandshakeMAC.mac1Key(responder: identity.address.bytes)
        clockRefusalLog = RefusalLog(intervalMs: config.refusalLogIntervalMs, limit: Self.refusalLogLimit)
        pinRefusalLog = RefusalLog(intervalMs: config.refusalLogIntervalMs, limit: Self.refusalLogLimit)
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
        var one = OneDatagram<Address>()
        send(payload, to: address, now: now, into: &one)
        return one.action.map { [$0] } ?? []
    }

    /// Encrypts an application payload to a neighbour whose link is up straight into `sink` (the forwarding path:
    /// no allocation). False when the link is not up.
    @discardableResult
    public mutating func send<Sink: DatagramSink<Address>>(_ payload: [UInt8], to address: WalletAddress, now: Int64,
                                                         into sink: inout Sink) -> Bool {
        // In place, in its table: reading `peers[address]?.isUp` alone would copy the whole peer.
        guard let slot = peers.index(forKey: address) else { return false }
        return payload.withUnsafeBytes { Self.seal(&peers.values[slot], inner: .application, body: $0, counters: &counters, into: &sink) }
    }

    /// Tells every neighbour this node is going away and takes all links down.
    public mutating func closeAll(now: Int64) -> [LinkAction<Address>] {
        var actions: [LinkAction<Address>] = []
        for address in peers.keys.sorted() {
            guard var peer = peers[address], peer.isUp else { continue }
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
        case .cookieReply: return receiveCookieReply(datagram, from: source, now: now)
        case .refusal: return receiveRefusal(datagram, from: source, now: now)
        case nil:
            counters.malformed += 1
            return []
        }
    }

    /// One datagram from the UDP port, read where it lies: a transport datagram of a known session whose inner
    /// message is an application payload is decrypted into `payload` (its storage reused) and nothing is
    /// allocated — the forwarding path; anything else goes the way of `receive(_:from:now:)`.
    public mutating func receive(_ datagram: UnsafeRawBufferPointer, from source: Address, now: Int64,
                                 payload: inout [UInt8]) -> LinkReceipt<Address> {
        guard datagram.first == LinkMessageType.transport.rawValue, datagram.count >= LinkWire.transportMinBytes,
              let slot = receivers.index(forKey: Self.transportIndex(datagram))
        else { return .actions(receive(Array(datagram), from: source, now: now)) }
        counters.packetsIn += 1
        counters.bytesIn += datagram.count
        guard let peer = openTransport(datagram, at: slot, from: source, now: now, into: &payload) else { return .actions([]) }
        guard payload.first == InnerType.application.rawValue else { return .actions(receiveInner(payload, from: peer, now: now)) }
        // The type byte is removed in place (a move of the bytes, no copy).
        payload.removeFirst()
        return .payload(from: peer)
    }

    /// Timers: handshake retries, pings, dead links, rekeying. Call at least every `pingIntervalMs`.
    public mutating func tick(now: Int64) -> [LinkAction<Address>] {
        var actions: [LinkAction<Address>] = []
        for (index, p) in pending where p.expiresAt <= now {
            pending[index] = nil
        }
        for (index, h) in halfOpen where h.expiresAt <= now {
            dropHalfOpen(index)
        }
        guardian.prune(now: now)
        refusals = refusals.filter { now - $0.value.at < config.rejectAfterMs }
        for (endpoint, line) in clockRefusalLog.flush(now: now) + pinRefusalLog.flush(now: now) {
            actions.append(.refused(endpoint, reason: line))
        }
        for address in Array(peers.keys) {
            guard var peer = peers[address] else { continue }
            tickPeer(&peer, now: now, actions: &actions)
            // A peer that is down is forgotten after `rejectAfterMs`.
            let idle = !peer.isUp && now - peer.lastReceivedAt >= config.rejectAfterMs
            peers[address] = idle ? nil : peer
        }
        for endpoint in Array(dials.keys) {
            guard var dial = dials[endpoint] else { continue }
            if let index = dial.pendingIndex, pending[index] == nil { dial.pendingIndex = nil }
            let connected = dial.peer.map { peers[$0]?.isUp ?? false } ?? false
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

    /// When `tick` next has something to do (docs/architecture.md, "Clocks"): a handshake to give up or retry, a
    /// ping to send or count as lost, a link to mark down or rekey, a session or peer to forget, a refusal count to
    /// log. Nil when nothing is scheduled. Ticking earlier does nothing but tidy (rate-limit buckets, old refusals).
    public var nextDeadline: Int64? {
        var next = Int64.max
        for p in pending.values { next = min(next, p.expiresAt) }
        for h in halfOpen.values { next = min(next, h.expiresAt) }
        // A dial whose handshake was refused (its pending entry dropped) still names it until a tick: it waits too.
        for dial in dials.values where !(dial.pendingIndex.map { pending[$0] != nil } ?? false)
            && !(dial.peer.map { peers[$0]?.isUp ?? false } ?? false) {
            next = min(next, dial.nextAttemptAt)
        }
        for peer in peers.values { next = min(next, peerDeadline(peer)) }
        next = min(min(next, clockRefusalLog.nextFlush ?? .max), pinRefusalLog.nextFlush ?? .max)
        return next == .max ? nil : next
    }

    /// `tickPeer`'s next work for one peer (and when a peer that is down is forgotten).
    private func peerDeadline(_ peer: Peer<Address>) -> Int64 {
        guard case .up(let up) = peer.link else { return peer.lastReceivedAt + config.rejectAfterMs }
        var next = up.previous.map { $0.createdAt + config.rejectAfterMs } ?? .max
        next = min(min(next, peer.lastReceivedAt + config.deadAfterMs), min(up.current.createdAt + config.rejectAfterMs, up.nextPingAt))
        for sentAt in up.outstandingPings.values { next = min(next, sentAt + config.pingTimeoutMs) }
        if !(up.rekeyIndex.map { pending[$0] != nil } ?? false) { next = min(next, up.current.createdAt + rekeyAge(up.current)) }
        return next
    }

    /// The initiator rekeys on time; the responder only if the initiator has not (for example after a restart).
    private func rekeyAge(_ session: Sending) -> Int64 {
        session.isInitiator ? config.rekeyAfterMs : config.rekeyAfterMs + (config.rejectAfterMs - config.rekeyAfterMs) / 2
    }

    // MARK: queries

    public func isUp(_ address: WalletAddress) -> Bool { peers.index(forKey: address).map { peers.values[$0].isUp } ?? false }

    public var upPeers: [WalletAddress] { peers.values.filter(\.isUp).map(\.address).sorted() }

    /// How many nodes this manager keeps a peer entry for (up or recently down), and how many handshakes it
    /// answered that are not complete yet.
    public var peerCount: Int { peers.count }
    public var halfOpenCount: Int { halfOpen.count }

    /// Smoothed RTT (nil before the first pong) and ping loss of a neighbour whose link is up.
    public func quality(_ address: WalletAddress) -> (rttMs: Double?, lossPercent: Double)? {
        guard let index = peers.index(forKey: address), peers.values[index].isUp else { return nil }
        return (peers.values[index].srttMs, Self.lossPercent(peers.values[index].pingOutcomes))
    }

    /// The node key and current endpoint of a neighbour whose link is up.
    public func upPeer(_ address: WalletAddress) -> (publicKey: PublicKey, endpoint: Address)? {
        guard let peer = peers[address], peer.isUp else { return nil }
        return (peer.publicKey, peer.endpoint)
    }

    /// Every known neighbour and every dial still connecting; `describe` renders endpoints.
    public func peerInfos(now: Int64, describe: (Address) -> String = { $0.description }) -> [PeerInfo] {
        var infos = peers.values.sorted { $0.address < $1.address }.map { peer in
            var sessionAgeMs: Int64?
            if case .up(let up) = peer.link { sessionAgeMs = now - up.current.createdAt }
            return PeerInfo(
                address: peer.address.checksummed, endpoint: describe(peer.endpoint),
                state: peer.isUp ? "up" : "down", rttMs: peer.srttMs, rttVarMs: peer.rttVarMs,
                lossPercent: Self.lossPercent(peer.pingOutcomes),
                packetsIn: peer.packetsIn, packetsOut: peer.packetsOut, bytesIn: peer.bytesIn, bytesOut: peer.bytesOut,
                lastSeenMsAgo: now - peer.lastReceivedAt, sessionAgeMs: sessionAgeMs,
                pinned: dials.values.contains { $0.pinned == peer.address },
                refusal: peer.isUp ? nil : refusals[peer.endpoint]?.text)
        }
        for dial in dials.values where dial.peer.map({ peers[$0] == nil }) ?? true {
            infos.append(PeerInfo(
                address: dial.pinned?.checksummed ?? "?", endpoint: describe(dial.endpoint), state: "connecting",
                lossPercent: 0, packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, pinned: dial.pinned != nil,
                refusal: refusals[dial.endpoint]?.text))
        }
        return infos
    }

    // MARK: handshake

    /// Sends an initiation naming `expected` (or any node, for an unpinned dial: that one is answered with a
    /// cookie reply carrying the responder's address, and re-sent naming it).
    private mutating func startHandshake(to endpoint: Address, expected: WalletAddress?, now: Int64, lifetime: Int64)
        -> (UInt32, LinkAction<Address>)
    {
        let index = freshIndex()
        let (secret, ephemeral) = LinkCrypto.keyPair(secret: random.bytes(32))
        let message = HandshakeInit(senderIndex: index, responder: expected?.bytes ?? LinkWire.anyResponder, ephemeral: ephemeral,
                                    timestampMs: UInt64(max(clock.wall(now), 0)), signer: identity, cookie: nil)
        pending[index] = PendingInit(endpoint: endpoint, expected: expected, secret: secret, message: message,
                                     expiresAt: now + max(lifetime, config.handshakeRetryMs))
        return (index, outbound(message.serialized, to: endpoint))
    }

    /// An initiation, checked cheapest first (docs/links.md, "Before any signature work"): its mac1 and named
    /// responder, the load (cookie) and the source's rate, its timestamp; only then the signature. The answer
    /// creates a half-open entry, not a peer: the peer exists once the initiator's first transport datagram
    /// authenticates.
    private mutating func receiveInit(_ datagram: [UInt8], from source: Address, now: Int64) -> [LinkAction<Address>] {
        guard let message = HandshakeInit(parsing: datagram) else {
            counters.malformed += 1
            return []
        }
        let forUs = message.responder == localAddress.bytes
        let mac1Key = forUs ? ownMac1Key : HandshakeMAC.mac1Key(responder: message.responder)
        guard HandshakeMAC.equal(message.mac1, HandshakeMAC.mac(key: mac1Key, message.transcript)) else {
            counters.macFailed += 1
            return []
        }
        let underLoad = guardian.countHandshake(now: now)
        // An initiation for any node learns who this is; one for another node (a stale pin, a replay) is told
        // too, so a misdirected dial can say so. Neither gets signature work.
        if !forUs || (underLoad && !guardian.validMac2(message, from: source, now: now)) {
            if !message.isForAnyResponder {
                if forUs { counters.cookieRequired += 1 } else { counters.wrongResponder += 1 }
            }
            let reply = CookieReply(receiverIndex: message.senderIndex, responder: localAddress.bytes,
                                    cookie: guardian.cookie(for: source, now: now))
            return [outbound(reply.serialized(initMac1: message.mac1), to: source)]
        }
        guard makeRoomForHalfOpen(from: source), guardian.allow(source, now: now) else {
            counters.rateLimited += 1
            return []
        }
        let skew = Int64(clamping: message.timestampMs) - clock.wall(now)
        guard abs(skew) <= config.initClockSkewMs else {
            return refuseClock(message, skew: skew, from: source, now: now)
        }
        counters.signatureRecoveries += 1
        guard let signature = Signature(bytes: message.signature),
              let initiatorKey = signature.recoverPublicKey(digest: HandshakeInit.digest(signedPart: message.signedPart))
        else {
            counters.malformed += 1
            return []
        }
        let initiator = initiatorKey.address
        if let allowed = config.allowedPeers, !allowed.contains(initiator) {
            counters.notAllowed += 1
            return []
        }
        if let pin = dials[source]?.pinned, pin != initiator {
            return refusePin(source, expected: pin.checksummed, answered: initiator.checksummed, now: now)
        }
        let lastTimestamp = max(peers[initiator]?.lastInitTimestamp ?? 0, halfOpenByInitiator[initiator].flatMap { halfOpen[$0]?.initTimestamp } ?? 0)
        guard initiator != localAddress, message.timestampMs > lastTimestamp,
              let (response, session) = respond(to: message, from: initiator, now: now)
        else {
            counters.handshakeRefused += 1
            return []
        }
        if let old = halfOpenByInitiator[initiator] { dropHalfOpen(old) }
        halfOpen[session.sending.localIndex] = HalfOpen(initiatorKey: initiatorKey, endpoint: source, initTimestamp: message.timestampMs,
                                                        session: session, expiresAt: now + config.halfOpenTimeoutMs)
        halfOpenByInitiator[initiator] = session.sending.localIndex
        halfOpenPerSource[source.rateLimitKey, default: 0] += 1
        return [outbound(response, to: source)]
    }

    /// Whether a handshake from `source` may become half-open: yes while the table has room; when it is full,
    /// the oldest entry of the host holding the most makes room, unless that host is `source`'s own (so a few
    /// hosts filling the table cannot lock everyone else out; docs/links.md).
    private mutating func makeRoomForHalfOpen(from source: Address) -> Bool {
        guard halfOpen.count >= config.halfOpenLimit else { return true }
        guard let heaviest = halfOpenPerSource.max(by: { $0.value < $1.value })?.key, heaviest != source.rateLimitKey,
              let oldest = halfOpen.filter({ $0.value.endpoint.rateLimitKey == heaviest }).min(by: { $0.value.expiresAt < $1.value.expiresAt })
        else { return false }
        dropHalfOpen(oldest.key)
        return true
    }

    /// The response to an initiation from `initiator` and the session it opens (nil for a low-order ephemeral key).
    private mutating func respond(to message: HandshakeInit, from initiator: WalletAddress, now: Int64) -> ([UInt8], Session)? {
        let (secret, ephemeral) = LinkCrypto.keyPair(secret: random.bytes(32))
        guard let shared = LinkCrypto.sharedSecret(secret: secret, peerPublic: message.ephemeral) else { return nil }
        let index = freshIndex()
        let transcript = message.transcript
        let signed = HandshakeResponse.signedPart(senderIndex: index, receiverIndex: message.senderIndex, ephemeral: ephemeral)
        let signature = identity.sign(digest: HandshakeResponse.digest(initTranscript: transcript, signedPart: signed))
        let keys = Self.sessionKeys(shared: shared, initTranscript: transcript, responseSignedPart: signed)
        let session = Session(sending: Sending(localIndex: index, remoteIndex: message.senderIndex, key: keys.responderToInitiator,
                                               createdAt: now, isInitiator: false),
                              receiving: Receiving(owner: initiator, key: keys.initiatorToResponder, createdAt: now))
        return (signed + signature.bytes, session)
    }

    /// Answers an initiation whose timestamp is out of the window with this node's clock (no state, fewer
    /// bytes than the initiation), and logs it at most once per `refusalLogIntervalMs` per endpoint.
    private mutating func refuseClock(_ message: HandshakeInit, skew: Int64, from source: Address, now: Int64) -> [LinkAction<Address>] {
        counters.clockSkew += 1
        let refusal = HandshakeRefusal(receiverIndex: message.senderIndex, reason: .clock, responderClockMs: UInt64(max(clock.wall(now), 0)))
        var actions = [outbound(refusal.serialized(initMac1: message.mac1), to: source)]
        var reason = ""
        if clockRefusalLog.logsNext(source) {
            // Only for the log line, so at most once per endpoint and interval: who sent it.
            counters.signatureRecoveries += 1
            let who = Signature(bytes: message.signature)?
                .recoverPublicKey(digest: HandshakeInit.digest(signedPart: message.signedPart))?.address.checksummed ?? "?"
            reason = "handshake from \(who) refused: its clock is \(Self.describeSkew(skew)) ours (accepted: ±\(config.initClockSkewMs / 1000) s)"
        }
        if let line = clockRefusalLog.note(source, now: now, reason: reason) { actions.append(.refused(source, reason: line)) }
        return actions
    }

    /// A link refused because another node key than the pinned one answered at `endpoint`: counted every time,
    /// logged at most once per `refusalLogIntervalMs` per endpoint (a peer dialled every few seconds with the
    /// wrong key would flood the log), with how many were not logged.
    private mutating func refusePin(_ endpoint: Address, expected: String, answered: String, now: Int64) -> [LinkAction<Address>] {
        counters.pinMismatch += 1
        let line = pinRefusalLog.note(endpoint, now: now, reason: "pinned to \(expected) but \(answered) answered")
        return line.map { [.refused(endpoint, reason: $0)] } ?? []
    }

    /// "150 s ahead of" / "90 s behind".
    static func describeSkew(_ skewMs: Int64) -> String {
        let seconds = (Double(abs(skewMs)) / 1000).rounded()
        return "\(Int(seconds)) s \(skewMs >= 0 ? "ahead of" : "behind")"
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
        let transcript = initState.message.transcript
        let digest = HandshakeResponse.digest(initTranscript: transcript, signedPart: message.signedPart)
        guard let responderKey = message.signature.recoverPublicKey(digest: digest), responderKey.address != localAddress,
              let shared = LinkCrypto.sharedSecret(secret: initState.secret, peerPublic: message.ephemeral)
        else {
            counters.handshakeRefused += 1
            return []
        }
        let responder = responderKey.address
        if let allowed = config.allowedPeers, !allowed.contains(responder) {
            counters.notAllowed += 1
            pending[message.receiverIndex] = nil
            return [.refused(source, reason: "\(responder) is not on the link allow-list")]
        }
        if let expected = initState.expected, expected != responder {
            pending[message.receiverIndex] = nil
            return refusePin(source, expected: expected.checksummed, answered: responder.checksummed, now: now)
        }
        pending[message.receiverIndex] = nil
        refusals[initState.endpoint] = nil
        if dials[initState.endpoint]?.pendingIndex == message.receiverIndex { dials[initState.endpoint]?.peer = responder }
        let keys = Self.sessionKeys(shared: shared, initTranscript: transcript, responseSignedPart: message.signedPart)
        var peer = peers[responder] ?? Peer(publicKey: responderKey, endpoint: source, now: now)
        let session = Session(sending: Sending(localIndex: message.receiverIndex, remoteIndex: message.senderIndex,
                                               key: keys.initiatorToResponder, createdAt: now, isInitiator: true),
                              receiving: Receiving(owner: responder, key: keys.responderToInitiator, createdAt: now))
        peer.endpoint = source
        peer.lastReceivedAt = now
        var actions: [LinkAction<Address>] = []
        install(session, in: &peer, rekeyDone: true, now: now, actions: &actions)
        // The first transport packet completes the handshake for the responder.
        if let confirm = seal(&peer, inner: .keepalive, body: [], now: now) { actions.append(confirm) }
        peers[responder] = peer
        return actions
    }

    /// A cookie reply to one of our initiations: re-send it once with mac2 (naming the responder, if it went to any node).
    private mutating func receiveCookieReply(_ datagram: [UInt8], from source: Address, now: Int64) -> [LinkAction<Address>] {
        guard datagram.count == LinkWire.cookieReplyBytes else {
            counters.malformed += 1
            return []
        }
        guard let reply = CookieReply(parsing: datagram, mac1For: { self.pending[$0]?.message.mac1 }),
              var initState = pending[reply.receiverIndex]
        else {
            counters.unknownSession += 1
            return []
        }
        let named = initState.message.isForAnyResponder ? reply.responder : initState.message.responder
        guard !initState.cookieTaken, named != localAddress.bytes else {
            counters.handshakeRefused += 1
            return []
        }
        guard reply.responder == named else {
            pending[reply.receiverIndex] = nil
            return refusePin(initState.endpoint, expected: WalletAddress(bytes: named)?.checksummed ?? "?",
                             answered: WalletAddress(bytes: reply.responder)?.checksummed ?? "?", now: now)
        }
        initState.cookieTaken = true
        initState.message = initState.message.retried(responder: named, cookie: reply.cookie, signer: identity)
        pending[reply.receiverIndex] = initState
        return [outbound(initState.message.serialized, to: initState.endpoint)]
    }

    /// A refusal of one of our initiations: remembered for `node-ctl peers`, logged once per interval.
    private mutating func receiveRefusal(_ datagram: [UInt8], from source: Address, now: Int64) -> [LinkAction<Address>] {
        guard datagram.count == LinkWire.refusalBytes else {
            counters.malformed += 1
            return []
        }
        guard let refusal = HandshakeRefusal(parsing: datagram, mac1For: { self.pending[$0]?.message.mac1 }),
              let initState = pending.removeValue(forKey: refusal.receiverIndex)
        else {
            counters.unknownSession += 1
            return []
        }
        let skew = Int64(clamping: initState.message.timestampMs) - Int64(clamping: refusal.responderClockMs)
        let peer = WalletAddress(bytes: initState.message.responder)?.checksummed ?? "?"
        let text = "peer \(peer) refused our handshake: our clock is \(Self.describeSkew(skew)) its clock"
        let logged = refusals[initState.endpoint].map { now - $0.at < config.refusalLogIntervalMs } ?? false
        if !logged { refusals[initState.endpoint] = Refusal(text: text, at: now) }
        return logged ? [] : [.refused(initState.endpoint, reason: text)]
    }

    private static func sessionKeys(shared: [UInt8], initTranscript: [UInt8], responseSignedPart: [UInt8])
        -> (initiatorToResponder: [UInt8], responderToInitiator: [UInt8])
    {
        let material = LinkCrypto.hash(LinkWire.keysLabel + initTranscript + responseSignedPart, key: shared, length: 64)
        return (Array(material[0..<32]), Array(material[32..<64]))
    }

    /// A new session: it becomes the one sealed with, and the one it replaces is kept to open late datagrams.
    /// `rekeyDone`: it came from this node's own handshake, which ends any rekey this node had under way.
    private mutating func install(_ session: Session, in peer: inout Peer<Address>, rekeyDone: Bool, now: Int64,
                                  actions: inout [LinkAction<Address>]) {
        receivers[session.sending.localIndex] = session.receiving
        let replaced = peer.link.withUp { up in
            let old = up.previous
            up.previous = (up.current.localIndex, up.current.createdAt)
            up.current = session.sending
            if rekeyDone { up.rekeyIndex = nil }
            return old
        }
        guard let replaced else {
            peer.link = .up(UpLink(current: session.sending, now: now))
            actions.append(.up(peer.address, peer.endpoint))
            return
        }
        if let old = replaced { receivers[old.index] = nil }
    }

    private mutating func dropHalfOpen(_ index: UInt32) {
        guard let entry = halfOpen.removeValue(forKey: index) else { return }
        let initiator = entry.initiatorKey.address
        if halfOpenByInitiator[initiator] == index { halfOpenByInitiator[initiator] = nil }
        let source = entry.endpoint.rateLimitKey
        if let held = halfOpenPerSource[source], held > 1 { halfOpenPerSource[source] = held - 1 } else { halfOpenPerSource[source] = nil }
    }

    // MARK: transport

    /// A transport datagram's session index (its header is there: `transportMinBytes` were checked).
    private static func transportIndex(_ datagram: UnsafeRawBufferPointer) -> UInt32 {
        UInt32(bigEndian: datagram.loadUnaligned(fromByteOffset: 1, as: UInt32.self))
    }

    private mutating func receiveTransport(_ datagram: [UInt8], from source: Address, now: Int64) -> [LinkAction<Address>] {
        guard datagram.count >= LinkWire.transportMinBytes else {
            counters.malformed += 1
            return []
        }
        let index = datagram.withUnsafeBytes(Self.transportIndex)
        if let entry = halfOpen[index] { return completeHandshake(entry, datagram: datagram, from: source, now: now) }
        guard let slot = receivers.index(forKey: index) else {
            counters.unknownSession += 1
            return []
        }
        var plaintext: [UInt8] = []
        guard let peer = datagram.withUnsafeBytes({ openTransport($0, at: slot, from: source, now: now, into: &plaintext) }) else {
            return []
        }
        return receiveInner(plaintext, from: peer, now: now)
    }

    /// Authenticates and decrypts a transport datagram of an installed session (its receiving half at `slot`, looked
    /// up once by the caller) into `plaintext` (the inner type byte first) and notes it on its peer. Nil when the
    /// session is too old, or the datagram replayed or forged (counted).
    private mutating func openTransport(_ datagram: UnsafeRawBufferPointer, at slot: [UInt32: Receiving].Index, from source: Address,
                                        now: Int64, into plaintext: inout [UInt8]) -> WalletAddress? {
        let counter = UInt64(bigEndian: datagram.loadUnaligned(fromByteOffset: 5, as: UInt64.self))
        // The receiving half and the peer change in place, in their tables (even reading one field of either through
        // its table would copy the whole value).
        guard let owner = Self.open(datagram, counter: counter, now: now, rejectAfterMs: config.rejectAfterMs,
                                    receiving: &receivers.values[slot], counters: &counters, into: &plaintext),
              let peerSlot = peers.index(forKey: owner)
        else { return nil }
        Self.note(datagram.count, on: &peers.values[peerSlot], from: source, now: now)
        return owner
    }

    /// The inner message of an authentic transport datagram from `address`.
    private mutating func receiveInner(_ plaintext: consuming [UInt8], from address: WalletAddress, now: Int64) -> [LinkAction<Address>] {
        guard var peer = peers.removeValue(forKey: address) else { return [] }
        defer { peers[address] = peer }
        var actions: [LinkAction<Address>] = []
        handleInner(plaintext, peer: &peer, now: now, actions: &actions)
        return actions
    }

    /// The initiator's first authentic transport datagram on a half-open session: it proved its key and that
    /// it receives at its address. Only now does the responder keep a peer for it.
    private mutating func completeHandshake(_ entry: HalfOpen<Address>, datagram: [UInt8], from source: Address,
                                            now: Int64) -> [LinkAction<Address>] {
        var session = entry.session
        var plaintext: [UInt8] = []
        let counter = UInt64(bigEndian: datagram.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 5, as: UInt64.self) })
        guard datagram.withUnsafeBytes({ Self.open($0, counter: counter, receiving: &session.receiving, counters: &counters,
                                                   into: &plaintext) })
        else { return [] }
        dropHalfOpen(session.sending.localIndex)
        let initiator = entry.initiatorKey.address
        var peer = peers[initiator] ?? Peer(publicKey: entry.initiatorKey, endpoint: source, now: now)
        peer.lastInitTimestamp = max(peer.lastInitTimestamp, entry.initTimestamp)
        var actions: [LinkAction<Address>] = []
        install(session, in: &peer, rekeyDone: false, now: now, actions: &actions)
        Self.note(datagram.count, on: &peer, from: source, now: now)
        handleInner(plaintext, peer: &peer, now: now, actions: &actions)
        peers[initiator] = peer
        return actions
    }

    /// `open` for a receiving half that may have expired: its owner when the datagram opened.
    private static func open(_ datagram: UnsafeRawBufferPointer, counter: UInt64, now: Int64, rejectAfterMs: Int64,
                             receiving: inout Receiving, counters: inout LinkCounters, into plaintext: inout [UInt8]) -> WalletAddress? {
        guard now - receiving.createdAt < rejectAfterMs,
              open(datagram, counter: counter, receiving: &receiving, counters: &counters, into: &plaintext) else { return nil }
        return receiving.owner
    }

    /// Checks the counter against the replay window and authenticates into `plaintext`; counts the failure and
    /// returns false.
    private static func open(_ datagram: UnsafeRawBufferPointer, counter: UInt64, receiving: inout Receiving,
                             counters: inout LinkCounters, into plaintext: inout [UInt8]) -> Bool {
        guard counter < LinkWire.counterLimit, receiving.replay.wouldAccept(counter) else {
            counters.replayed += 1
            return false
        }
        guard LinkCrypto.open(key: receiving.key, counter: counter, datagram: datagram, into: &plaintext) else {
            counters.authFailed += 1
            return false
        }
        _ = receiving.replay.accept(counter)
        return true
    }

    /// An authentic datagram of `bytes` from `source`: the peer's endpoint follows it.
    private static func note(_ bytes: Int, on peer: inout Peer<Address>, from source: Address, now: Int64) {
        peer.endpoint = source
        peer.lastReceivedAt = now
        peer.packetsIn += 1
        peer.bytesIn += bytes
    }

    private mutating func handleInner(_ plaintext: consuming [UInt8], peer: inout Peer<Address>, now: Int64, actions: inout [LinkAction<Address>]) {
        guard let type = plaintext.first.flatMap(InnerType.init(rawValue:)) else {
            counters.malformed += 1
            return
        }
        switch type {
        case .keepalive:
            break
        case .close:
            markDown(&peer, reason: "closed by peer", actions: &actions)
        case .ping:
            var reader = ByteReader(plaintext, offset: 1)
            guard let id = reader.readUInt32() else {
                counters.malformed += 1
                return
            }
            var w = ByteWriter(capacity: 4)
            w.write(id)
            if let pong = seal(&peer, inner: .pong, body: w.bytes, now: now) { actions.append(pong) }
        case .pong:
            var reader = ByteReader(plaintext, offset: 1)
            guard let id = reader.readUInt32(), let sentAt = peer.link.withUp({ $0.outstandingPings.removeValue(forKey: id) }) ?? nil else { return }
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
            // The plaintext is this call's own: its type byte is removed in place (a move of the bytes, no copy).
            var payload = plaintext
            payload.removeFirst()
            actions.append(.deliver(payload, from: peer.address))
        }
    }

    private mutating func seal(_ peer: inout Peer<Address>, inner: InnerType, body: [UInt8], now: Int64) -> LinkAction<Address>? {
        var one = OneDatagram<Address>()
        _ = body.withUnsafeBytes { Self.seal(&peer, inner: inner, body: $0, counters: &counters, into: &one) }
        return one.action
    }

    /// Seals one transport datagram to the peer's endpoint into `sink`; false when its link is down or its session
    /// has used up its counters.
    private static func seal<Sink: DatagramSink<Address>>(_ peer: inout Peer<Address>, inner: InnerType, body: UnsafeRawBufferPointer,
                                                          counters: inout LinkCounters, into sink: inout Sink) -> Bool {
        let next = peer.link.withUp { up -> (counter: UInt64, remoteIndex: UInt32, key: [UInt8])? in
            let counter = up.current.counter
            guard counter < LinkWire.counterLimit else { return nil }
            up.current.counter += 1
            return (counter, up.current.remoteIndex, up.current.key)
        }
        guard let (counter, remoteIndex, key) = next ?? nil else { return false }
        let length = LinkCrypto.sealedBytes(body: body.count)
        sink.append(length: length, to: peer.endpoint) { out in
            LinkCrypto.seal(key: key, counter: counter, header: (LinkMessageType.transport.rawValue, remoteIndex, counter),
                            inner: inner.rawValue, body: body, into: out)
        }
        peer.packetsOut += 1
        peer.bytesOut += length
        counters.packetsOut += 1
        counters.bytesOut += length
        return true
    }

    private mutating func outbound(_ datagram: [UInt8], to endpoint: Address) -> LinkAction<Address> {
        counters.packetsOut += 1
        counters.bytesOut += datagram.count
        return .send(datagram, to: endpoint)
    }

    // MARK: timers

    private mutating func tickPeer(_ peer: inout Peer<Address>, now: Int64, actions: inout [LinkAction<Address>]) {
        guard case .up(let up) = peer.link else { return }
        if let previous = up.previous, now - previous.createdAt >= config.rejectAfterMs {
            receivers[previous.index] = nil
            peer.link.withUp { $0.previous = nil }
        }
        let age = now - up.current.createdAt
        if now - peer.lastReceivedAt >= config.deadAfterMs || age >= config.rejectAfterMs {
            markDown(&peer, reason: age >= config.rejectAfterMs ? "session expired" : "no traffic for \(config.deadAfterMs / 1000) s",
                     actions: &actions)
            return
        }
        for (id, sentAt) in up.outstandingPings where now - sentAt >= config.pingTimeoutMs {
            peer.link.withUp { $0.outstandingPings[id] = nil }
            record(outcome: false, in: &peer)
        }
        if now >= up.nextPingAt {
            let id = peer.nextPingId
            peer.nextPingId &+= 1
            peer.link.withUp { up in
                up.outstandingPings[id] = now
                up.nextPingAt = now + config.pingIntervalMs
            }
            var w = ByteWriter(capacity: 4)
            w.write(id)
            if let ping = seal(&peer, inner: .ping, body: w.bytes, now: now) { actions.append(ping) }
        }
        let rekeyPending = up.rekeyIndex.map { pending[$0] != nil } ?? false
        if age >= rekeyAge(up.current), !rekeyPending {
            let (index, action) = startHandshake(to: peer.endpoint, expected: peer.address, now: now, lifetime: config.handshakeRetryMs)
            peer.link.withUp { $0.rekeyIndex = index }
            actions.append(action)
        }
    }

    private mutating func markDown(_ peer: inout Peer<Address>, reason: String, actions: inout [LinkAction<Address>]) {
        if case .up(let up) = peer.link {
            receivers[up.current.localIndex] = nil
            if let previous = up.previous { receivers[previous.index] = nil }
        }
        peer.link = .down
        actions.append(.down(peer.address, reason: reason))
    }

    private func record(outcome: Bool, in peer: inout Peer<Address>) {
        peer.pingOutcomes.append(outcome)
        if peer.pingOutcomes.count > config.lossWindow { peer.pingOutcomes.removeFirst() }
    }

    private static func lossPercent(_ outcomes: [Bool]) -> Double {
        guard !outcomes.isEmpty else { return 0 }
        return 100 * Double(outcomes.reduce(0) { $0 + ($1 ? 0 : 1) }) / Double(outcomes.count)
    }

    private func freshIndex() -> UInt32 {
        while true {
            let index = random.bytes(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            if index != 0, receivers.index(forKey: index) == nil, pending[index] == nil, halfOpen[index] == nil { return index }
        }
    }
}
