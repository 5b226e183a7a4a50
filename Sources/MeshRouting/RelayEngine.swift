import MeshIdentity
import MeshLink
import MeshWire

public struct RelayConfig: Sendable {
    /// Links a chain may have at most (`--hop-limit`).
    public var hopLimit = 6
    /// Sessions this node relays at once (`--max-sessions`); a set-up beyond it is refused.
    public var maxSessions = 10_000
    /// Sessions one neighbour may ask this node to relay (`--max-sessions-per-neighbour`).
    public var maxSessionsPerNeighbour = 1_000
    /// A signed set-up is valid this long after the caller signed it.
    public var setupLifetimeMs: Int64 = 30_000
    /// Set-ups expiring further ahead than the lifetime plus this are refused (clocks within two minutes).
    public var maxClockSkewMs: Int64 = 120_000
    /// A hop waits this long per link of hop budget left for the rest of the chain to answer, then tries its next
    /// candidate (the budget shrinks downstream, so the deadlines nest).
    public var hopWaitMs: Int64 = 700
    /// A set-up not answered is sent again this often.
    public var setupRetryMs: Int64 = 300
    /// A session with no traffic either way for this long is removed (the ends' probes keep live ones fresh).
    public var idleTimeoutMs: Int64 = 30_000
    /// The caller probes the active chain this often, the standby chain every `standbyProbeMs`.
    public var probeMs: Int64 = 100
    public var standbyProbeMs: Int64 = 1_000
    /// The active chain is given up when nothing came back over it for this long (probes are answered at once,
    /// so silence of the callee's audio, DTX included, does not count).
    public var deadAfterMs: Int64 = 300
    /// The caller asks the chain for every hop's live figures this often.
    public var reportMs: Int64 = 1_000
    /// A missing standby chain is tried again this often.
    public var standbyRetryMs: Int64 = 3_000
    /// A chain that keeps losing packets: when at least this share of the active chain's recent probes (the last
    /// `lossWindow`, those older than `lossGraceMs`) went unanswered while the standby lost at most half as many,
    /// the call moves to the standby; and not again for `lossHoldMs` (no flapping between two lossy chains).
    public var lossSwitchPercent = 20.0
    public var lossWindow = 20
    public var lossGraceMs: Int64 = 300
    public var lossHoldMs: Int64 = 10_000
    /// A call left without any chain is given up after this long.
    public var repairGiveUpMs: Int64 = 10_000
    /// Set-ups a neighbour may send a second (each costs a signature recovery), and the burst.
    public var setupsPerSecond = 50.0
    public var setupBurst = 100.0
    var setupRate: TokenBucket.Rate { TokenBucket.Rate(perSecond: setupsPerSecond, burst: setupBurst) }
    /// Whether this node judges the calls it relays and sends verdicts (docs/calls.md, "Quality").
    public var judges = true
    public init() {}
}

/// What the forwarding layer needs to know of the node's links and routes (the daemon answers from the link
/// layer and gossip; tests from a fixed graph).
public protocol RelayRoutes {
    func isUp(_ node: WalletAddress) -> Bool
    /// Linked neighbours through which `target` is at most `links` links away, best first; `target` itself first
    /// when it is a linked neighbour.
    func nextHops(toward target: WalletAddress, within links: Int) -> [WalletAddress]
    /// This node's link to `neighbour` as it measures it.
    func figures(_ neighbour: WalletAddress) -> HopFigures
}

public enum RelayAction: Sendable, Equatable {
    /// A link payload for the neighbour `to`.
    case send([UInt8], to: WalletAddress)
    /// End-to-end call bytes that reached this end of a call's chain.
    case deliver(call: UInt64, [UInt8])
    /// The caller's first chain is up: the call can be offered.
    case chainUp(call: UInt64)
    /// No chain could be built (the reason names the node that refused, when one did).
    case chainFailed(call: UInt64, String)
    /// The call moved to another chain (the chain's nodes after the caller's, before and after).
    case chainSwitched(call: UInt64, from: [WalletAddress], to: [WalletAddress], why: String)
    /// This relay's judgement of a call it carries changed (or is due again): the node signs a `QualityVerdict` and
    /// `inject`s it toward both ends of that session.
    case judged(ChainKey, QualityTier, QualitySample)
}

/// What the hot path (`RelayEngine.forward`) made of a data message.
public enum Forwarded: Sendable {
    /// Pass it on to this neighbour: its label was rewritten in place.
    case pass(to: WalletAddress)
    /// Anything else (an end of the chain, a drop): these actions.
    case actions([RelayAction])
}

/// Counters of the forwarding layer (`node-ctl sessions --json`).
public struct RelayCounters: Sendable, Codable, Equatable {
    public var malformed = 0
    /// Data for a label this node never gave out (forged, or a session already gone).
    public var unknownLabel = 0
    /// Data for a known label that came from another neighbour than the session's.
    public var wrongNeighbour = 0
    public var forwardedPackets = 0
    public var forwardedBytes = 0
    public var setupsRelayed = 0
    public var setupsRefused = 0
    public var setupsRateLimited = 0
    public var failovers = 0
    /// Probes or pongs whose MAC was wrong (forged by a node on the chain), ignored.
    public var forgedProbes = 0
    /// Media of calls this node quelches, dropped on its way to the callee.
    public var quelchDrops = 0
    public init() {}
}

/// A session as `node-ctl sessions` shows it.
public struct SessionInfo: Sendable, Codable, Equatable {
    public var call: String
    public var chain: String
    /// caller, relay or callee.
    public var role: String
    public var state: String
    public var upstream: String?
    public var upstreamLabel: UInt32?
    public var downstream: String?
    public var downstreamLabel: UInt32?
    /// Packets and bytes toward the callee and back toward the caller, and packets dropped.
    public var packetsForward: Int
    public var bytesForward: Int
    public var packetsBack: Int
    public var bytesBack: Int
    public var drops: Int
    public var idleMs: Int64
    /// This node quelches the call (a relay dropping the caller's media toward the callee).
    public var quelched: Bool
    /// A relay's judgement of the call (docs/calls.md, "Quality"), once it has seen its media.
    public var tier: String?
    public var why: String?
}

/// A chain as the caller knows it (`node-ctl calls`, `trace`).
public struct ChainInfo: Sendable, Codable, Equatable {
    public var chain: String
    /// active, standby or building.
    public var role: String
    /// The nodes after the caller's, the home node last.
    public var nodes: [String]
    /// Each link's figures, the caller's own first, as the last report brought them.
    public var hops: [HopFigures]
    /// End-to-end round trip of the chain's probes.
    public var rttMs: Double?
    public var lastHeardMsAgo: Int64?
}

/// Per-session forwarding, hop by hop, along chains of relays (docs/forwarding.md). Pure: events and `now` in,
/// actions out; labels and chain ids come from an injected random source (the CSPRNG in a node: a neighbour that
/// could predict them could aim forged messages at sessions it does not carry).
public struct RelayEngine: Sendable {
    public let local: WalletAddress
    public let config: RelayConfig
    private let random: LinkRandom

    enum Role: String { case caller, relay, callee }

    struct Hop {
        var node: WalletAddress
        /// The label that node takes our packets with (0 until its accept arrives).
        var label: UInt32
    }

    /// A set-up this node is pushing downstream: candidates in order, one at a time.
    struct Pending {
        var request: ChainMessage.Setup
        var candidates: [WalletAddress]
        var deadline: Int64 = 0
        var nextRetry: Int64 = 0
        var best: (reason: ChainRefusal, by: WalletAddress)?
    }

    struct Session {
        let key: ChainKey
        let role: Role
        var up: Hop?
        var down: Hop?
        /// Our labels: packets from upstream carry `upLabel`, packets from downstream `downLabel`.
        var upLabel: UInt32 = 0
        var downLabel: UInt32 = 0
        var pending: Pending?
        /// What this hop's accept carried (its link and every hop's after it), sent again to a repeated set-up.
        var figures: [HopFigures] = []
        var lastActivity: Int64
        var packetsForward = 0, bytesForward = 0, packetsBack = 0, bytesBack = 0, drops = 0
        /// A relay's loss meters of the media it forwards each way (docs/calls.md, "Quality").
        var lossForward = LossMeter(), lossBack = LossMeter()
    }

    /// A relay's judgement of one call it carries: kept per call, not per session, so that a chain rebuilt through
    /// this node (the same call, a new session) goes on being judged where it was.
    struct Judgement {
        var judge = QualityJudge(ceiling: .studio)
        var lastVerdictAt: Int64 = .min
    }

    /// What a relay's sessions of one call measured in one judging round: the worst of each figure, and the
    /// sessions (usually one; a second while a chain is rebuilt through this node).
    struct CallSample {
        var loss: LossMeter.Reading?
        var recent: LossMeter.Reading?
        var jitter: Double?
        var rtt: Double?
        private var first: ChainKey
        private var more: [ChainKey] = []

        init(key: ChainKey) { first = key }

        var keys: [ChainKey] { [first] + more }

        /// One session's readings (each direction) and the RTTs of its two links.
        mutating func add(_ key: ChainKey, _ forward: LossMeter.Reading?, _ back: LossMeter.Reading?, rtts: (Double?, Double?)) {
            if key != first { more.append(key) }
            take(forward)
            take(back)
            note(rtts.0)
            note(rtts.1)
        }

        private mutating func note(_ r: Double?) {
            if let r { rtt = max(rtt ?? r, r) }
        }

        private mutating func take(_ reading: LossMeter.Reading?) {
            guard let reading else { return }
            // Ties go to more packets due, so that the table's order never shows.
            if loss.map({ ($0.percent, $0.due) < (reading.percent, reading.due) }) ?? true { loss = reading }
            if let percent = reading.recentPercent,
               recent.map({ ($0.recentPercent ?? 0, $0.recentDue) < (percent, reading.recentDue) }) ?? true { recent = reading }
            if let j = reading.jitterMs { jitter = max(jitter ?? j, j) }
        }
    }

    /// The caller's view of one chain of its call.
    struct CallerChain {
        var nodes: [WalletAddress] = []
        var hops: [HopFigures] = []
        var established: Int64?
        var lastHeard: Int64 = 0
        /// When a standby became the active chain: its silence counts from then (it was probed once a second).
        var activeSince: Int64 = 0
        var nextProbe: Int64 = 0
        var nextReport: Int64 = 0
        var probeSequence: UInt32 = 0
        var rttMs: Double?
        /// The last probes: sequence, when sent, whether answered.
        var probes: [(sequence: UInt32, at: Int64, answered: Bool)] = []

        /// Unanswered share (%) of the probes old enough to have been answered; nil with fewer than `minimum`.
        func lossPercent(now: Int64, grace: Int64, minimum: Int) -> Double? {
            let judged = probes.filter { now - $0.at >= grace }
            guard judged.count >= minimum else { return nil }
            return Double(judged.filter { !$0.answered }.count) * 100 / Double(judged.count)
        }
    }

    struct CallerEnd {
        let wallet: PrivateKey
        let target: WalletAddress
        /// Linked neighbours said to reach the target (its presence record's relays), tried after routed ones.
        var hints: [WalletAddress]
        var chains: [UInt32: CallerChain] = [:]
        var active: UInt32?
        var standby: UInt32?
        var wasUp = false
        /// Since when the call has had no working chain (nil while it has one).
        var lostSince: Int64?
        var nextStandbyTry: Int64 = 0
        /// With no working chain, the next rebuild (not held back by a failed standby's backoff).
        var nextRebuildTry: Int64 = 0
        var standbyAttempts = 0
        var lastRefusal: String?
        /// The last move away from a lossy chain.
        var lossSwitchAt: Int64?
        /// Set once the call is answered: probes and pongs are authenticated from then on.
        var probeKey: ProbeKey?
    }

    private var sessions: [ChainKey: Session] = [:]
    /// The chains this node holds a session of, per call (an index of `sessions`, kept by `install` and `remove`).
    private var callChains: [UInt64: Set<UInt32>] = [:]
    /// Calls this node quelches as a relay: the caller's media toward the callee is dropped here (docs/calls.md,
    /// "Call control"). Forgotten with the call's last session here.
    private var quelchedCalls: Set<UInt64> = []
    /// The calls this node judges as a relay; forgotten with the call's last session here.
    private var judgements: [UInt64: Judgement] = [:]
    /// The sessions with a set-up in progress (the tick's work every 50 ms; idle sessions are swept once a second).
    private var pendingKeys: Set<ChainKey> = []
    private var nextIdleSweep: Int64 = 0
    private var nextJudging: Int64 = 0
    /// When `tick` last ran: a caller's chains are watched (probes, silence, failover, standby) every `watchMs`.
    private var lastTick: Int64?
    public static let watchMs: Int64 = 50
    /// The share of calls (`call % judgingSlices`) the next judging round takes.
    private var judgingSlice: UInt64 = 0
    /// Calls are judged in this many slices, one a round, `sampleMs / judgingSlices` apart: each still every `sampleMs`,
    /// but a relay carrying thousands never stops forwarding for all of them at once (a round over 2,000 sessions
    /// at once held packets for milliseconds: docs/performance.md).
    static let judgingSlices: UInt64 = 5
    /// Relays repeat a verdict below studio this often.
    static let verdictRepeatMs: Int64 = 5_000
    static let idleSweepMs: Int64 = 1_000
    /// Label → session and whether the label is for packets from downstream.
    private var labels: [UInt32: (key: ChainKey, fromDown: Bool)] = [:]
    private var callers: [UInt64: CallerEnd] = [:]
    /// The callee's end: the chain of each call its replies go on (the one the caller's traffic came over last).
    private var callees: [UInt64: UInt32] = [:]
    /// The caller's node of each call that ends here (the first node of its first set-up's path), and the wallet
    /// that signed that set-up.
    private var callerNodes: [UInt64: WalletAddress] = [:]
    private var calleeWallets: [UInt64: WalletAddress] = [:]
    /// The probe keys of calls answered here, and the calls whose caller has sent a probe under it (from then on
    /// every probe must carry its MAC; before, the caller may not have the answer yet).
    private var calleeKeys: [UInt64: ProbeKey] = [:]
    private var confirmedCallees: Set<UInt64> = []
    /// Chains a call may have at its callee's end (active, standby, one being rebuilt, one spare).
    static let maxChainsPerCall = 4
    private var setupBudgets: [WalletAddress: TokenBucket] = [:]
    /// Set-ups this node refused lately, by key: a repeat from the same neighbour gets the same refusal.
    private var tombstones: [ChainKey: Tombstone] = [:]
    static let tombstoneMs: Int64 = 10_000
    static let maxTombstones = 4_096

    struct Tombstone {
        var from: WalletAddress
        var reason: ChainRefusal
        var by: WalletAddress
        var untilMs: Int64
    }
    private var relayedPerNeighbour: [WalletAddress: Int] = [:]
    private var relayed = 0
    public private(set) var counters = RelayCounters()
    /// The wall clock: set-ups carry a signed wall-clock expiry; every timer runs on the monotonic `now` (the shell
    /// keeps this current).
    public var clock = WallClock()

    private func randomUInt32() -> UInt32 { random.bytes(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }

    public init(local: WalletAddress, config: RelayConfig = RelayConfig(), random: LinkRandom) {
        self.local = local
        self.config = config
        self.random = random
    }

    // MARK: the caller's end

    /// Builds a chain for `call` from `wallet` to the node `target`; `.chainUp` when it stands. A standby chain
    /// follows by itself, and the call is kept on a working chain until `close`.
    public mutating func open(call: UInt64, wallet: PrivateKey, target: WalletAddress, hints: [WalletAddress],
                              routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        guard callers[call] == nil else { return [] }
        callers[call] = CallerEnd(wallet: wallet, target: target, hints: hints)
        return build(call, standby: false, routes: routes, now: now)
    }

    /// Ends every chain of a call at this end (caller or callee), telling the relays.
    public mutating func close(call: UInt64) -> [RelayAction] {
        callers[call] = nil
        callees[call] = nil
        callerNodes[call] = nil
        calleeWallets[call] = nil
        calleeKeys[call] = nil
        confirmedCallees.remove(call)
        var actions: [RelayAction] = []
        for chain in (callChains[call] ?? []).sorted() {
            actions += remove(ChainKey(call: call, chain: chain), reason: .closed, notify: [.up, .down])
        }
        return actions
    }

    /// Quelches (or lets through again) a call this node relays: from now on the caller's media toward the callee is
    /// dropped here, on every chain of the call that passes; `notice` (the signed `QuelchNotice`) goes to both ends
    /// on each of them. Nil when no chain of that call passes through this node as a relay.
    public mutating func quelch(call: UInt64, _ on: Bool, notice: [UInt8]) -> [RelayAction]? {
        let relayed = (callChains[call] ?? []).sorted().map { ChainKey(call: call, chain: $0) }.filter { sessions[$0]?.role == .relay }
        guard !relayed.isEmpty else { return nil }
        if on { quelchedCalls.insert(call) } else { quelchedCalls.remove(call) }
        return relayed.flatMap { inject($0, notice) }
    }

    /// Call bytes of this relay's own (a signed notice or verdict) toward both ends of a session it relays.
    public func inject(_ key: ChainKey, _ bytes: [UInt8]) -> [RelayAction] {
        guard let session = sessions[key], session.role == .relay else { return [] }
        return [session.up, session.down].compactMap { hop in
            hop.flatMap { $0.label == 0 ? nil : RelayAction.send(ChainMessage.data(label: $0.label, bytes), to: $0.node) }
        }
    }

    /// Whether this node quelches the call as a relay.
    public func quelches(call: UInt64) -> Bool { quelchedCalls.contains(call) }

    /// Sends end-to-end call bytes on the call's current chain.
    public mutating func send(call: UInt64, _ bytes: [UInt8]) -> [RelayAction] {
        guard let chain = callers[call]?.active ?? callees[call] else { return [] }
        return sendInner(ChainKey(call: call, chain: chain), bytes)
    }

    private mutating func sendInner(_ key: ChainKey, _ inner: [UInt8]) -> [RelayAction] {
        guard let session = sessions[key] else { return [] }
        let hop = session.role == .caller ? session.down : session.up
        guard let hop, hop.label != 0 else { return [] }
        return [.send(ChainMessage.data(label: hop.label, inner), to: hop.node)]
    }

    /// The call is answered: from now on its probes and pongs carry MACs under `key`, and unauthenticated ones (a relay
    /// answering for a callee it cut off) count for nothing.
    public mutating func authenticate(call: UInt64, key: ProbeKey) {
        if callers[call] != nil { callers[call]?.probeKey = key } else { calleeKeys[call] = key }
    }

    /// The neighbour this end's call bytes leave by now: the first relay of the caller's active chain, or the callee's
    /// upstream on the chain its replies go on. A direct path asks it for STUN (docs/calls.md, "Direct paths").
    public func firstHop(call: UInt64) -> WalletAddress? {
        guard let chain = callers[call]?.active ?? callees[call], let session = sessions[ChainKey(call: call, chain: chain)] else {
            return nil
        }
        return (session.role == .caller ? session.down : session.up)?.node
    }

    /// The node at the other end of a call's chains: the callee's home node, or the caller's node.
    public func farEnd(call: UInt64) -> WalletAddress? { callers[call]?.target ?? callerNodes[call] }

    private mutating func build(_ call: UInt64, standby: Bool, routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        guard let end = callers[call] else { return [] }
        var chainID: UInt32 = 0
        while chainID == 0 || sessions[ChainKey(call: call, chain: chainID)] != nil { chainID = randomUInt32() }
        let key = ChainKey(call: call, chain: chainID)
        var avoid: [WalletAddress] = []
        var firstHops = firstHops(toward: end.target, hints: end.hints, routes: routes)
        if standby, let active = end.active.flatMap({ end.chains[$0] }), let first = active.nodes.first {
            let relays = active.nodes.filter { $0 != end.target }
            let others = firstHops.filter { $0 != first }
            if others.isEmpty {
                // The caller has no other way out (one neighbour): share the first hop, avoid the relays after it;
                // with none after it, any standby would be the active chain again.
                guard relays.count > 1 else { return [] }
                avoid = Array(relays.dropFirst())
            } else {
                // Another first hop, and on the first try none of the active chain's relays either.
                firstHops = others
                if end.standbyAttempts % 2 == 0 { avoid = relays }
            }
        }
        firstHops.removeAll { avoid.contains($0) && $0 != end.target }
        let downLabel = allocateLabel(key, fromDown: true)
        let expires = UInt64(max(clock.wall(now) + config.setupLifetimeMs, 0))
        let request = ChainMessage.Setup.sign(key: key, wallet: end.wallet, target: end.target, expiresAtMs: expires,
                                              hopLimit: UInt8(clamping: config.hopLimit), backLabel: downLabel, path: [local],
                                              avoid: avoid)
        var session = Session(key: key, role: .caller, lastActivity: now)
        session.downLabel = downLabel
        session.pending = Pending(request: request, candidates: firstHops)
        install(session)
        pendingKeys.insert(key)
        callers[call]?.chains[chainID] = CallerChain()
        if standby { callers[call]?.standby = chainID }
        return advance(key, routes: routes, now: now)
    }

    // MARK: inputs

    /// A link payload of this layer (`ChainMessage.claims`) from the neighbour `node`.
    public mutating func receive(_ payload: [UInt8], from node: WalletAddress, routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        if ChainMessage.isData(payload) {
            var message = payload
            switch forward(&message, from: node, now: now) {
            case .pass(let to): return [.send(message, to: to)]
            case .actions(let actions): return actions
            }
        }
        guard let message = ChainMessage(parsing: payload) else {
            counters.malformed += 1
            return []
        }
        switch message {
        case .setup(let setup): return receiveSetup(setup, from: node, routes: routes, now: now)
        case .accept(let key, let label, let figures): return receiveAccept(key, label: label, figures: figures, from: node, routes: routes, now: now)
        case .refuse(let key, let reason, let by): return receiveRefuse(key, reason: reason, by: by, from: node, routes: routes, now: now)
        case .teardown(let key, let reason): return receiveTeardown(key, reason: reason, from: node, routes: routes, now: now)
        case .data: return []
        case .report(let label, let figures): return receiveReport(label, figures, back: false, from: node, routes: routes, now: now)
        case .reportBack(let label, let figures): return receiveReport(label, figures, back: true, from: node, routes: routes, now: now)
        }
    }

    /// The hot path, for data messages (`ChainMessage.isData`): look the label up, check the neighbour, rewrite the
    /// label in place and pass the message on (nothing is allocated), or hand it up at an end of the chain.
    public mutating func forward(_ payload: inout [UInt8], from node: WalletAddress, now: Int64) -> Forwarded {
        // The session is counted in place, in its table, through its index: one lookup, no copy of its lists per
        // packet, and no allocation (an access through the key-subscript, optional and all, allocates a frame for
        // a value this large).
        guard let label = ChainMessage.label(of: payload), let (key, fromDown) = labels[label],
              let index = sessions.index(forKey: key)
        else {
            counters.unknownLabel += 1
            return .actions([])
        }
        let (role, to, fromRightNeighbour) = Self.count(&sessions.values[index], from: node, fromDown: fromDown, bytes: payload.count,
                                                        rtp: Self.rtpHeader(payload), now: now)
        guard fromRightNeighbour else {
            counters.wrongNeighbour += 1
            return .actions([])
        }
        guard role == .relay else { return .actions(receiveAtEnd(key, role: role, payload[5...], now: now)) }
        guard let to, to.label != 0 else { return .actions([]) }
        if !quelchedCalls.isEmpty, !fromDown, payload.count > 5, payload[5] == TrunkWire.mediaTag,
           quelchedCalls.contains(key.call) {
            counters.quelchDrops += 1
            return .actions([])
        }
        ChainMessage.setLabel(to.label, in: &payload)
        counters.forwardedPackets += 1
        counters.forwardedBytes += payload.count
        return .pass(to: to.node)
    }

    /// Counts a packet on its session, in place: its role, the hop it goes on to, and whether it came from the
    /// session's neighbour on that side (else it is counted as a drop).
    private static func count(_ session: inout Session, from node: WalletAddress, fromDown: Bool, bytes: Int,
                              rtp: (sequence: UInt16, timestamp: UInt32)?, now: Int64) -> (Role, Hop?, Bool)
    {
        guard (fromDown ? session.down : session.up)?.node == node else {
            session.drops += 1
            return (session.role, nil, false)
        }
        session.lastActivity = now
        if fromDown {
            session.packetsBack += 1
            session.bytesBack += bytes
            if let rtp { session.lossBack.note(sequence: rtp.sequence, timestamp: rtp.timestamp, arrivalMs: now) }
        } else {
            session.packetsForward += 1
            session.bytesForward += bytes
            if let rtp { session.lossForward.note(sequence: rtp.sequence, timestamp: rtp.timestamp, arrivalMs: now) }
        }
        let to = fromDown ? session.up : session.down
        if session.role == .relay, to?.label ?? 0 == 0 { session.drops += 1 }
        return (session.role, to, true)
    }

    /// The RTP sequence number and timestamp of a media data message (inner tag 0x20, RTP version 2), nil for
    /// anything else.
    private static func rtpHeader(_ payload: [UInt8]) -> (sequence: UInt16, timestamp: UInt32)? {
        guard payload.count >= TrunkWire.mediaHeaderBytes, payload[5] == TrunkWire.mediaTag, payload[6] >> 6 == 2 else { return nil }
        let timestamp = UInt32(payload[10]) << 24 | UInt32(payload[11]) << 16 | UInt32(payload[12]) << 8 | UInt32(payload[13])
        return (UInt16(payload[8]) << 8 | UInt16(payload[9]), timestamp)
    }

    private mutating func receiveAtEnd(_ key: ChainKey, role: Role, _ bytes: ArraySlice<UInt8>, now: Int64) -> [RelayAction] {
        guard let inner = ChainInner(parsing: bytes) else {
            counters.malformed += 1
            return []
        }
        switch inner {
        case .probe(let seq, let at, let active, _):
            guard role == .callee else { return [] }
            // Answered here, a probe must carry its MAC once the caller has shown it has the key: until its answer
            // arrives (it may be lost, or on a chain that broke) the caller probes without one, and refusing those
            // would leave the callee's replies on a chain the caller gave up, the answer never getting through.
            let probeKey = calleeKeys[key.call]
            let authentic = probeKey?.verifies(inner) == true
            if authentic { confirmedCallees.insert(key.call) }
            guard authentic || !confirmedCallees.contains(key.call) else {
                counters.forgedProbes += 1
                return []
            }
            // A probe on the caller's active chain moves the callee's replies there at once, even while the
            // caller sends no call bytes (a pause: DTX sends one packet in 400 ms).
            if active { callees[key.call] = key.chain }
            let pong = ChainInner.pong(sequence: seq, sentAtMs: at)
            let mac = authentic ? probeKey?.mac(pong) ?? [] : []
            return sendInner(key, ChainInner.pong(sequence: seq, sentAtMs: at, mac: mac).serialize())
        case .pong(let seq, let at, _):
            guard role == .caller, var chain = callers[key.call]?.chains[key.chain] else { return [] }
            // Only the callee's (authenticated, once the call is answered) pongs say the chain works.
            guard callers[key.call]?.probeKey.map({ $0.verifies(inner) }) ?? true else {
                counters.forgedProbes += 1
                return []
            }
            chain.lastHeard = now
            if callers[key.call]?.active == key.chain { callers[key.call]?.lostSince = nil }
            chain.rttMs = Double(max(now - Int64(clamping: at), 0))
            if let i = chain.probes.lastIndex(where: { $0.sequence == seq }) { chain.probes[i].answered = true }
            callers[key.call]?.chains[key.chain] = chain
            return []
        case .call(let bytes):
            // Call bytes do not move the callee's replies: a relay injects its own (verdicts, quelch notices) on every
            // chain of the call it carries, a stale one too; only the caller's active probes say where it is.
            return [.deliver(call: key.call, bytes)]
        }
    }

    private mutating func receiveSetup(_ setup: ChainMessage.Setup, from node: WalletAddress, routes: some RelayRoutes,
                                       now: Int64) -> [RelayAction] {
        let key = setup.key
        func refuse(_ reason: ChainRefusal) -> [RelayAction] {
            counters.setupsRefused += 1
            return [.send(ChainMessage.refuse(key, reason, by: local).serialize(), to: node)]
        }
        if let existing = sessions[key] {
            guard existing.up?.node == node else { return refuse(.duplicate) }
            // A retransmission: answer again once installed; while pending, the hop is busy further on.
            guard existing.pending == nil, existing.upLabel != 0 else { return [] }
            return [.send(ChainMessage.accept(key, label: existing.upLabel, figures: existing.figures).serialize(), to: node)]
        }
        // A repeat of a set-up this node refused or dropped lately (it crossed the refusal on the way) gets the same
        // answer instead of a second search and a sub-chain nobody would use.
        if let gone = tombstones[key], gone.from == node, now < gone.untilMs {
            counters.setupsRefused += 1
            return [.send(ChainMessage.refuse(key, gone.reason, by: gone.by).serialize(), to: node)]
        }
        guard setup.path.last == node, !setup.path.contains(local) else { return refuse(.duplicate) }
        var budget = setupBudgets[node] ?? TokenBucket(config.setupRate, nowMs: now)
        let allowed = budget.take(config.setupRate, nowMs: now)
        setupBudgets[node] = budget
        guard allowed else {
            // Refused, not dropped: a silent drop would have the upstream hop send it again and again.
            counters.setupsRateLimited += 1
            return refuse(.rateLimited)
        }
        let expires = Int64(clamping: setup.expiresAtMs)
        let wallMs = clock.wall(now)
        guard expires > wallMs, expires <= wallMs + config.setupLifetimeMs + config.maxClockSkewMs else { return refuse(.expired) }
        guard setup.isAuthentic else { return refuse(.badSignature) }
        if setup.target == local {
            // A call's chains all come from its caller's wallet (the first set-up's), and a call has a few at most:
            // a node on one of its chains cannot add a chain of its own and pull the callee's replies onto it.
            if let bound = calleeWallets[key.call], bound != setup.caller { return refuse(.duplicate) }
            guard callChains[key.call, default: []].count < Self.maxChainsPerCall else { return refuse(.sessionLimit) }
            calleeWallets[key.call] = setup.caller
            let label = allocateLabel(key, fromDown: false)
            var session = Session(key: key, role: .callee, up: Hop(node: node, label: setup.backLabel), lastActivity: now)
            session.upLabel = label
            install(session)
            if callees[key.call] == nil { callees[key.call] = key.chain }
            if callerNodes[key.call] == nil { callerNodes[key.call] = setup.path[0] }
            return [.send(ChainMessage.accept(key, label: label, figures: []).serialize(), to: node)]
        }
        let linksSoFar = setup.path.count
        let budgetLeft = min(Int(setup.hopLimit), config.hopLimit, ChainMessage.maxNodes) - linksSoFar
        guard budgetLeft > 0 else { return refuse(.hopLimit) }
        guard relayed < config.maxSessions else { return refuse(.sessionLimit) }
        guard relayedPerNeighbour[node, default: 0] < config.maxSessionsPerNeighbour else { return refuse(.neighbourLimit) }
        let excluded = Set(setup.path + setup.avoid.filter { $0 != setup.target })
        let candidates = routes.nextHops(toward: setup.target, within: budgetLeft).filter { !excluded.contains($0) && $0 != local }
        guard !candidates.isEmpty else { return refuse(.noRoute) }
        var request = setup
        let downLabel = allocateLabel(key, fromDown: true)
        request.backLabel = downLabel
        request.path.append(local)
        var session = Session(key: key, role: .relay, up: Hop(node: node, label: setup.backLabel), lastActivity: now)
        session.downLabel = downLabel
        session.pending = Pending(request: request, candidates: candidates)
        install(session)
        pendingKeys.insert(key)
        relayed += 1
        relayedPerNeighbour[node, default: 0] += 1
        counters.setupsRelayed += 1
        return advance(key, routes: routes, now: now)
    }

    /// Sends the set-up to the next candidate, or refuses upstream (or fails the caller's chain) when none is left.
    private mutating func advance(_ key: ChainKey, routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        guard var session = sessions[key], var pending = session.pending else { return [] }
        while let next = pending.candidates.first {
            pending.candidates.removeFirst()
            guard routes.isUp(next) else { continue }
            let budgetLeft = min(Int(pending.request.hopLimit), config.hopLimit, ChainMessage.maxNodes) - (pending.request.path.count - 1)
            pending.deadline = min(now + config.hopWaitMs * Int64(max(budgetLeft, 1)), clock.monotonic(Int64(clamping: pending.request.expiresAtMs)))
            pending.nextRetry = now + config.setupRetryMs
            session.down = Hop(node: next, label: 0)
            session.pending = pending
            sessions[key] = session
            return [.send(ChainMessage.setup(pending.request).serialize(), to: next)]
        }
        let reason = pending.best ?? (.noRoute, local)
        if session.role == .caller {
            return chainFailed(key, why: "\(reason.reason) (at \(reason.by))", now: now)
        }
        var actions: [RelayAction] = []
        if let up = session.up {
            counters.setupsRefused += 1
            actions.append(.send(ChainMessage.refuse(key, reason.reason, by: reason.by).serialize(), to: up.node))
        }
        return actions + remove(key, reason: reason.reason, notify: [], refusedBy: reason.by, now: now)
    }

    private mutating func receiveAccept(_ key: ChainKey, label: UInt32, figures: [HopFigures], from node: WalletAddress,
                                        routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        guard var session = sessions[key], session.pending != nil, session.down?.node == node else {
            // An accept for a chain this node is not building through `node` (it gave up on it meanwhile): the
            // sub-chain behind it is torn down at once instead of idling for 30 s.
            if sessions[key]?.down?.node != node { return [.send(ChainMessage.teardown(key, .closed).serialize(), to: node)] }
            return []
        }
        session.pending = nil
        pendingKeys.remove(key)
        session.down?.label = label
        session.lastActivity = now
        sessions[key] = session
        let all = [routes.figures(node)] + figures
        switch session.role {
        case .relay:
            guard let up = session.up else { return [] }
            let upLabel = allocateLabel(key, fromDown: false)
            sessions[key]?.upLabel = upLabel
            sessions[key]?.figures = all
            return [.send(ChainMessage.accept(key, label: upLabel, figures: all).serialize(), to: up.node)]
        case .caller:
            return chainEstablished(key, figures: all, routes: routes, now: now)
        case .callee:
            return []
        }
    }

    private mutating func receiveRefuse(_ key: ChainKey, reason: ChainRefusal, by: WalletAddress, from node: WalletAddress,
                                        routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        guard var session = sessions[key], var pending = session.pending, session.down?.node == node else { return [] }
        if pending.best.map({ reason.rank > $0.reason.rank }) ?? true { pending.best = (reason, by) }
        session.pending = pending
        session.down = nil
        sessions[key] = session
        return advance(key, routes: routes, now: now)
    }

    private mutating func receiveTeardown(_ key: ChainKey, reason: ChainRefusal, from node: WalletAddress,
                                          routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        guard let session = sessions[key] else { return [] }
        if session.up?.node == node { return remove(key, reason: reason, notify: [.down]) + lost(key, why: "\(reason)", routes: routes, now: now) }
        guard session.down?.node == node else { return [] }
        if session.pending != nil {
            // The hop being tried gave up (its own timeout): try the next candidate.
            return receiveRefuse(key, reason: reason == .closed ? .timeout : reason, by: node, from: node, routes: routes, now: now)
        }
        return remove(key, reason: reason, notify: [.up]) + lost(key, why: "\(reason) at \(node)", routes: routes, now: now)
    }

    private mutating func receiveReport(_ label: UInt32, _ figures: [HopFigures], back: Bool, from node: WalletAddress,
                                        routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        guard let (key, fromDown) = labels[label], fromDown == back, let session = sessions[key],
              (back ? session.down : session.up)?.node == node, figures.count < ChainMessage.maxNodes else {
            counters.unknownLabel += 1
            return []
        }
        sessions[key]?.lastActivity = now
        switch (session.role, back) {
        case (.relay, false):
            guard let down = session.down, down.label != 0 else { return [] }
            return [.send(ChainMessage.report(label: down.label, figures + [routes.figures(down.node)]).serialize(), to: down.node)]
        case (.relay, true):
            guard let up = session.up else { return [] }
            return [.send(ChainMessage.reportBack(label: up.label, figures).serialize(), to: up.node)]
        case (.callee, false):
            guard let up = session.up else { return [] }
            return [.send(ChainMessage.reportBack(label: up.label, figures).serialize(), to: up.node)]
        case (.caller, true):
            callers[key.call]?.chains[key.chain]?.hops = figures
            return []
        default:
            return []
        }
    }

    /// A link went down: every session through it goes, and the other side is told.
    public mutating func linkDown(_ node: WalletAddress, routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        var actions: [RelayAction] = []
        for key in sessions.keys.sorted() {
            guard let session = sessions[key] else { continue }
            if session.up?.node == node {
                actions += remove(key, reason: .linkDown, notify: [.down]) + lost(key, why: "link to \(node) down", routes: routes, now: now)
            } else if session.down?.node == node {
                if session.pending != nil {
                    actions += receiveRefuse(key, reason: .linkDown, by: node, from: node, routes: routes, now: now)
                } else {
                    actions += remove(key, reason: .linkDown, notify: [.up]) + lost(key, why: "link to \(node) down", routes: routes, now: now)
                }
            }
        }
        setupBudgets[node] = nil
        return actions
    }

    // MARK: time

    /// When `tick` next has something to do: a set-up to retry or give up, a caller's chains to watch (every
    /// `watchMs`), the idle sweep and the judging rounds while sessions exist. Nil while the node carries nothing.
    public var nextDeadline: Int64? {
        var next = Int64.max
        for key in pendingKeys {
            guard let pending = sessions[key]?.pending else { continue }
            next = min(next, min(pending.deadline, pending.nextRetry))
        }
        if !sessions.isEmpty {
            next = min(next, nextIdleSweep)
            if config.judges { next = min(next, nextJudging) }
        }
        if !callers.isEmpty { next = min(next, lastTick.map { $0 + Self.watchMs } ?? .min) }
        return next == .max ? nil : next
    }

    public mutating func tick(routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        lastTick = now
        var actions: [RelayAction] = []
        for key in pendingKeys.sorted() {
            guard let session = sessions[key], let pending = session.pending, let down = session.down else { continue }
            if now >= pending.deadline {
                actions.append(.send(ChainMessage.teardown(key, .timeout).serialize(), to: down.node))
                actions += receiveRefuse(key, reason: .timeout, by: down.node, from: down.node, routes: routes, now: now)
            } else if now >= pending.nextRetry {
                sessions[key]?.pending?.nextRetry = now + config.setupRetryMs
                actions.append(.send(ChainMessage.setup(pending.request).serialize(), to: down.node))
            }
        }
        if now >= nextIdleSweep {
            nextIdleSweep = now + Self.idleSweepMs
            tombstones = tombstones.filter { now < $0.value.untilMs }
            // Read in place (a relay holds thousands of sessions); the few idle ones are removed in key order.
            var idle: [ChainKey] = []
            var index = sessions.startIndex
            while index != sessions.endIndex {
                if Self.isIdle(&sessions.values[index], now: now, after: config.idleTimeoutMs) { idle.append(sessions.keys[index]) }
                sessions.formIndex(after: &index)
            }
            for key in idle.sorted() {
                actions += remove(key, reason: .idle, notify: [.up, .down]) + lost(key, why: "idle", routes: routes, now: now)
            }
        }
        for call in callers.keys.sorted() { actions += maintain(call, routes: routes, now: now) }
        // A late tick judges the slices it missed too (a round at most), so each call is still judged every sampleMs.
        let step = QualityJudge.sampleMs / Int64(Self.judgingSlices)
        var slices: UInt64 = 0
        while config.judges, now >= nextJudging, slices < Self.judgingSlices {
            actions += judge(slice: judgingSlice, routes: routes, now: now)
            judgingSlice = (judgingSlice + 1) % Self.judgingSlices
            nextJudging += step
            slices += 1
        }
        if now >= nextJudging { nextJudging = now + step }
        return actions
    }

    /// Every `QualityJudge.sampleMs` each call this node relays with media is judged (a slice of the calls a round):
    /// the worst loss its sessions here
    /// measured (either direction, `LossMeter`), and the RTT of this node's slowest link of them; the worst jitter goes
    /// with the figures (shown, not judged). A change of tier is
    /// sent at once, a tier below studio again every `verdictRepeatMs` (a lost verdict does not hold, and the ends
    /// forget one not repeated); each goes toward both ends of every session of the call that carries media here.
    private mutating func judge(slice: UInt64, routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        // Sessions are read in place, in table order (the figures are maxima, so order does not matter), and each
        // neighbour's RTT once: a relay carrying thousands of sessions must not stall its forwarding for this.
        var samples: [UInt64: CallSample] = [:]
        samples.reserveCapacity(sessions.count / Int(Self.judgingSlices) + 1)
        var rtts: [WalletAddress: Double?] = [:]
        func rtt(_ node: WalletAddress) -> Double? {
            if let known = rtts[node] { return known }
            let measured = routes.figures(node).rttMs
            rtts[node] = measured
            return measured
        }
        var index = sessions.startIndex
        while index != sessions.endIndex {
            defer { sessions.formIndex(after: &index) }
            let key = sessions.keys[index]
            // A session without media (a chain the caller left, not yet swept) is neither judged nor told.
            guard key.call % Self.judgingSlices == slice, let (up, down, forward, back) = Self.readings(&sessions.values[index]),
                  forward != nil || back != nil
            else { continue }
            samples[key.call, default: CallSample(key: key)].add(key, forward, back, rtts: (rtt(up), rtt(down)))
        }
        var verdicts: [(call: UInt64, actions: [RelayAction])] = []
        for (call, entry) in samples {
            guard let loss = entry.loss else { continue }
            let sample = QualitySample(lossPercent: loss.percent, packets: loss.due, rttMs: entry.rtt, jitterMs: entry.jitter,
                                       recentLossPercent: entry.recent?.recentPercent, recentPackets: entry.recent?.recentDue)
            let (tier, due) = Self.sample(&judgements[call, default: Judgement()], sample, now: now)
            if due { verdicts.append((call, entry.keys.sorted().map { .judged($0, tier, sample) })) }
        }
        return verdicts.sorted { $0.call < $1.call }.flatMap(\.actions)
    }

    /// A relayed session's two neighbours and its loss meters' readings (each taken: a new window begins); nil for
    /// a session that does not relay (yet). Through `inout`: a session read through its table would be copied whole
    /// for each field.
    private static func readings(_ session: inout Session)
        -> (up: WalletAddress, down: WalletAddress, forward: LossMeter.Reading?, back: LossMeter.Reading?)?
    {
        guard session.role == .relay, session.pending == nil, let up = session.up?.node, let down = session.down?.node else { return nil }
        return (up, down, session.lossForward.take(), session.lossBack.take())
    }

    /// Whether a session (not a caller's, not being set up) has been idle for `idleMs`; `inout` as `readings`.
    private static func isIdle(_ session: inout Session, now: Int64, after idleMs: Int64) -> Bool {
        session.pending == nil && session.role != .caller && now - session.lastActivity >= idleMs
    }

    /// One call's sample to its judgement: the tier, and whether a verdict is due (a change, or a tier below studio
    /// not told for `verdictRepeatMs`).
    private static func sample(_ judgement: inout Judgement, _ sample: QualitySample, now: Int64) -> (QualityTier, Bool) {
        let changed = judgement.judge.sample(sample, now: now)
        guard changed || (judgement.judge.tier < .studio && now - judgement.lastVerdictAt >= verdictRepeatMs) else {
            return (judgement.judge.tier, false)
        }
        judgement.lastVerdictAt = now
        return (judgement.judge.tier, true)
    }

    /// The caller's upkeep of a call's chains: probes and reports, failover when the active chain goes quiet,
    /// a standby chain built when missing.
    private mutating func maintain(_ call: UInt64, routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        guard var end = callers[call] else { return [] }
        var actions: [RelayAction] = []
        // Each chain is read afresh: a failover earlier in the loop changes the chain it promotes.
        for id in end.chains.keys.sorted() {
            guard let chain = end.chains[id], let established = chain.established else { continue }
            let key = ChainKey(call: call, chain: id)
            let isActive = end.active == id
            // The active chain is given up after deadAfterMs of silence; the standby when two of its probes went
            // unanswered (it could not be switched to anyway: `lost` wants it heard within one probe interval
            // plus deadAfterMs), so a new standby is built instead of a dead one being kept.
            let deadAfter = isActive ? config.deadAfterMs : 2 * config.standbyProbeMs + config.deadAfterMs
            let silence = now - max(chain.lastHeard, established, chain.activeSince)
            if isActive, silence >= deadAfter, usableStandby(end, now: now) == nil, silence < config.repairGiveUpMs {
                // Make-before-break with no standby to move to: the silent chain stays the call's (it may only be
                // lossy: a rebuild across a lossy link takes seconds) while a replacement is built (below, as for a
                // call with no chain); the replacement comes up as the standby and the failover moves the call to it.
                end.lostSince = end.lostSince ?? now
            } else if silence >= deadAfter {
                callers[call] = end
                actions += remove(key, reason: .timeout, notify: [.down])
                actions += lost(key, why: "nothing back for \(deadAfter) ms", routes: routes, now: now)
                guard let updated = callers[call] else { return actions }
                end = updated
                continue
            }
            if now >= chain.nextProbe {
                callers[call] = end
                actions += probe(key, now: now)
                guard let updated = callers[call] else { return actions }
                end = updated
            }
            guard var c = end.chains[id] else { continue }
            if isActive, now >= c.nextReport, let session = sessions[key], let down = session.down {
                c.nextReport = now + config.reportMs
                actions.append(.send(ChainMessage.report(label: down.label, [routes.figures(down.node)]).serialize(), to: down.node))
            }
            end.chains[id] = c
        }
        callers[call] = end
        actions += leaveLossyChain(call, now: now)
        guard let end = callers[call] else { return actions }
        // No working chain (none at all, or a silent active one with no standby to take over): a new one, every
        // `setupRetryMs` while none is being built.
        if end.lostSince != nil, usableStandby(end, now: now) == nil, !end.chains.values.contains(where: { $0.established == nil }),
           now >= end.nextRebuildTry {
            callers[call]?.nextRebuildTry = now + config.setupRetryMs
            actions += build(call, standby: false, routes: routes, now: now)
        }
        if end.active != nil, end.standby == nil, now >= end.nextStandbyTry {
            callers[call]?.nextStandbyTry = now + config.standbyRetryMs
            actions += build(call, standby: true, routes: routes, now: now)
        }
        if let since = end.lostSince, end.active == nil, now - since >= config.repairGiveUpMs {
            actions += close(call: call)
            actions.append(.chainFailed(call: call, "no working chain for \(config.repairGiveUpMs / 1000) s"
                                        + (end.lastRefusal.map { ": \($0)" } ?? "")))
        }
        return actions
    }

    /// The call's standby when it can take over: established and heard within a probe interval and `deadAfterMs`.
    private func usableStandby(_ end: CallerEnd, now: Int64) -> UInt32? {
        guard let standby = end.standby, let chain = end.chains[standby], chain.established != nil,
              now - chain.lastHeard < config.standbyProbeMs + config.deadAfterMs else { return nil }
        return standby
    }

    /// Sends the next probe on one of the caller's chains and schedules the one after. A chain that just became the
    /// active one is probed at once: its probe moves the callee's replies to it.
    private mutating func probe(_ key: ChainKey, now: Int64) -> [RelayAction] {
        guard var end = callers[key.call], var c = end.chains[key.chain] else { return [] }
        let isActive = end.active == key.chain
        c.nextProbe = now + (isActive ? config.probeMs : config.standbyProbeMs)
        c.probeSequence &+= 1
        c.probes.append((sequence: c.probeSequence, at: now, answered: false))
        if c.probes.count > config.lossWindow { c.probes.removeFirst(c.probes.count - config.lossWindow) }
        end.chains[key.chain] = c
        callers[key.call] = end
        let at = UInt64(max(now, 0))
        let mac = end.probeKey?.mac(ChainInner.probe(sequence: c.probeSequence, sentAtMs: at, active: isActive)) ?? []
        return sendInner(key, ChainInner.probe(sequence: c.probeSequence, sentAtMs: at, active: isActive, mac: mac).serialize())
    }

    /// Moves the call to its standby when the active chain keeps losing probes and the standby does not; the lossy
    /// chain is torn down and a new standby built as usual.
    private mutating func leaveLossyChain(_ call: UInt64, now: Int64) -> [RelayAction] {
        guard var end = callers[call], end.lossSwitchAt.map({ now - $0 >= config.lossHoldMs }) ?? true, let activeID = end.active,
              let standbyID = end.standby, let active = end.chains[activeID], let standby = end.chains[standbyID],
              standby.established != nil,
              let loss = active.lossPercent(now: now, grace: config.lossGraceMs, minimum: config.lossWindow / 2),
              loss >= config.lossSwitchPercent,
              let standbyLoss = standby.lossPercent(now: now, grace: config.lossGraceMs, minimum: 3),
              standbyLoss <= loss / 2 else { return [] }
        end.active = standbyID
        end.standby = nil
        end.chains[activeID] = nil
        end.chains[standbyID]?.activeSince = now
        end.lossSwitchAt = now
        end.nextStandbyTry = now + config.standbyRetryMs
        callers[call] = end
        counters.failovers += 1
        let why = "\(Int(loss.rounded())) % of probes lost on the active chain, \(Int(standbyLoss.rounded())) % on the standby"
        return probe(ChainKey(call: call, chain: standbyID), now: now)
            + remove(ChainKey(call: call, chain: activeID), reason: .replaced, notify: [.down])
            + [.chainSwitched(call: call, from: active.nodes, to: standby.nodes, why: why)]
    }

    // MARK: the caller's chain events

    private mutating func chainEstablished(_ key: ChainKey, figures: [HopFigures], routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        guard var end = callers[key.call] else { return remove(key, reason: .closed, notify: [.down]) }
        let nodes = Array(figures.dropFirst().map(\.node)) + [end.target]
        end.chains[key.chain] = CallerChain(nodes: nodes, hops: figures, established: now, lastHeard: now)
        var actions: [RelayAction] = []
        if end.active == nil {
            let previous = end.lostSince != nil
            end.active = key.chain
            if end.standby == key.chain { end.standby = nil }
            end.lostSince = nil
            end.nextStandbyTry = now + config.probeMs
            if !end.wasUp {
                end.wasUp = true
                actions.append(.chainUp(call: key.call))
            } else if previous {
                counters.failovers += 1
                actions.append(.chainSwitched(call: key.call, from: [], to: nodes, why: "rebuilt"))
            }
        } else if end.standby != key.chain {
            end.standby = key.chain
        }
        end.standbyAttempts = 0
        callers[key.call] = end
        return end.active == key.chain ? probe(key, now: now) + actions : actions
    }

    private mutating func chainFailed(_ key: ChainKey, why: String, now: Int64) -> [RelayAction] {
        _ = remove(key, reason: .closed, notify: [])
        guard var end = callers[key.call] else { return [] }
        end.chains[key.chain] = nil
        end.lastRefusal = why
        if end.standby == key.chain {
            end.standby = nil
            end.standbyAttempts += 1
            end.nextStandbyTry = now + (end.standbyAttempts % 2 == 1 ? 0 : config.standbyRetryMs)
            callers[key.call] = end
            return []
        }
        callers[key.call] = end
        if !end.wasUp {
            callers[key.call] = nil
            return [.chainFailed(call: key.call, why)]
        }
        return []
    }

    /// A chain of this node's is gone (torn down, timed out, a link down): the caller moves the call to its standby
    /// or builds a new chain.
    private mutating func lost(_ key: ChainKey, why: String, routes: some RelayRoutes, now: Int64) -> [RelayAction] {
        if callees[key.call] == key.chain {
            // The chain the caller's traffic came over last (its probes keep the active one fresh), not a stale one.
            callees[key.call] = callChains[key.call]?.max { a, b in
                let (x, y) = (sessions[ChainKey(call: key.call, chain: a)]?.lastActivity ?? 0, sessions[ChainKey(call: key.call, chain: b)]?.lastActivity ?? 0)
                return (x, a) < (y, b)
            }
        }
        guard var end = callers[key.call], let chain = end.chains.removeValue(forKey: key.chain) else { return [] }
        var actions: [RelayAction] = []
        var promoted: UInt32?
        if end.standby == key.chain { end.standby = nil }
        if end.active == key.chain {
            end.active = nil
            if let standby = usableStandby(end, now: now), let next = end.chains[standby] {
                promoted = standby
                end.active = standby
                end.standby = nil
                end.lostSince = nil
                end.chains[standby]?.activeSince = now
                end.nextStandbyTry = now
                counters.failovers += 1
                actions.append(.chainSwitched(call: key.call, from: chain.nodes, to: next.nodes, why: why))
            } else {
                end.lostSince = end.lostSince ?? now
            }
        }
        callers[key.call] = end
        if let promoted { actions = probe(ChainKey(call: key.call, chain: promoted), now: now) + actions }
        if end.active == nil, !end.chains.values.contains(where: { $0.established == nil }) {
            actions += build(key.call, standby: false, routes: routes, now: now)
        }
        return actions
    }

    // MARK: state

    private enum Side { case up, down }

    /// Removes a session and its labels, telling the neighbours on `notify` sides.
    private mutating func remove(_ key: ChainKey, reason: ChainRefusal, notify: Set<Side>, refusedBy: WalletAddress? = nil,
                                 now: Int64? = nil) -> [RelayAction] {
        guard let session = sessions.removeValue(forKey: key) else { return [] }
        pendingKeys.remove(key)
        callChains[key.call]?.remove(key.chain)
        if callChains[key.call]?.isEmpty == true {
            callChains[key.call] = nil
            quelchedCalls.remove(key.call)
            judgements[key.call] = nil
        }
        if let refusedBy, let now, let up = session.up, tombstones.count < Self.maxTombstones {
            tombstones[key] = Tombstone(from: up.node, reason: reason, by: refusedBy, untilMs: now + Self.tombstoneMs)
        }
        if session.upLabel != 0 { labels[session.upLabel] = nil }
        if session.downLabel != 0 { labels[session.downLabel] = nil }
        if session.role == .relay, let up = session.up {
            relayed -= 1
            relayedPerNeighbour[up.node, default: 1] -= 1
            if relayedPerNeighbour[up.node] == 0 { relayedPerNeighbour[up.node] = nil }
        }
        // A call answered here keeps its binding until it is closed; one that never was is forgotten with its last chain.
        if session.role == .callee, calleeKeys[key.call] == nil, callChains[key.call] == nil {
            callerNodes[key.call] = nil
            calleeWallets[key.call] = nil
        }
        var actions: [RelayAction] = []
        let message = ChainMessage.teardown(key, reason).serialize()
        if notify.contains(.up), let up = session.up { actions.append(.send(message, to: up.node)) }
        if notify.contains(.down), let down = session.down { actions.append(.send(message, to: down.node)) }
        return actions
    }

    private mutating func install(_ session: Session) {
        sessions[session.key] = session
        callChains[session.key.call, default: []].insert(session.key.chain)
    }

    private mutating func allocateLabel(_ key: ChainKey, fromDown: Bool) -> UInt32 {
        var label: UInt32 = 0
        while label == 0 || labels[label] != nil { label = randomUInt32() }
        labels[label] = (key, fromDown)
        return label
    }

    // MARK: queries

    public func sessions(now: Int64) -> [SessionInfo] {
        sessions.values.sorted { $0.key < $1.key }.map { s in
            SessionInfo(call: Hex.padded(s.key.call), chain: s.key.description, role: s.role.rawValue,
                        state: s.pending != nil ? "setting up" : "up",
                        upstream: s.up?.node.checksummed, upstreamLabel: s.role == .caller ? nil : s.upLabel,
                        downstream: s.down?.node.checksummed, downstreamLabel: s.role == .callee ? nil : s.downLabel,
                        packetsForward: s.packetsForward, bytesForward: s.bytesForward, packetsBack: s.packetsBack,
                        bytesBack: s.bytesBack, drops: s.drops, idleMs: now - s.lastActivity,
                        quelched: s.role == .relay && quelchedCalls.contains(s.key.call),
                        tier: s.role == .relay ? judgements[s.key.call]?.judge.tier.name : nil,
                        why: s.role == .relay ? judgements[s.key.call]?.judge.why : nil)
        }
    }

    /// The caller's chains of a call: active first, then standby, then those being built.
    public func chains(call: UInt64, now: Int64) -> [ChainInfo] {
        guard let end = callers[call] else { return [] }
        let roles = end.chains.keys.map { id in
            (id, end.active == id ? 0 : end.standby == id && end.chains[id]?.established != nil ? 1 : 2)
        }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
        return roles.compactMap { id, rank in
            guard let c = end.chains[id] else { return nil }
            return ChainInfo(chain: ChainKey(call: call, chain: id).description, role: ["active", "standby", "building"][rank],
                             nodes: c.nodes.map(\.checksummed), hops: c.hops, rttMs: c.rttMs,
                             lastHeardMsAgo: c.established.map { _ in now - c.lastHeard })
        }
    }

    /// The next hops a chain from this node toward `target` tries, in order: those with a route within the hop
    /// limit (the target first when linked, then the cheapest), then the linked relays its presence record lists.
    public func firstHops(toward target: WalletAddress, hints: [WalletAddress], routes: some RelayRoutes) -> [WalletAddress] {
        var hops = routes.nextHops(toward: target, within: config.hopLimit)
        for hint in hints where routes.isUp(hint) && !hops.contains(hint) { hops.append(hint) }
        return hops
    }

    public var sessionCount: Int { sessions.count }
}
