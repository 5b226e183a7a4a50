import MeshIdentity
import MeshRouting
import MeshWire

/// A MAC key only a call's two ends hold: derived from both SRTP master keys under a label of its own, so relays on
/// the chain can neither forge nor alter what it authenticates. ICE signalling and call control each have one.
public struct EndToEndKey: Sendable {
    public static let macBytes = 16
    private let bytes: [UInt8]
    private let tag: UInt8

    /// `tag`: the call-layer tag the sealed messages go under (it is part of what the MAC covers).
    public init(label: String, tag: UInt8, callerToCallee: [UInt8], calleeToCaller: [UInt8]) {
        bytes = Keccak.hash256(Array(label.utf8) + callerToCallee + calleeToCaller)
        self.tag = tag
    }

    /// `content` followed by the first 16 bytes of Keccak-256(key ‖ tag ‖ content).
    public func seal(_ content: [UInt8]) -> [UInt8] { content + mac(content) }

    /// The content, or nil when the MAC is wrong.
    public func open(_ sealed: [UInt8]) -> [UInt8]? {
        guard sealed.count > Self.macBytes else { return nil }
        let content = Array(sealed.dropLast(Self.macBytes))
        return mac(content) == Array(sealed.suffix(Self.macBytes)) ? content : nil
    }

    private func mac(_ content: [UInt8]) -> [UInt8] {
        Array(Keccak.hash256(bytes + [tag] + content).prefix(Self.macBytes))
    }
}

/// One call-control message between the two ends of a call (docs/calls.md, "Call control").
public enum ControlMessage: Equatable, Sendable {
    /// The sender's state: whether it holds the call, the tier its own judge recommends, and the tier it is at. Sent
    /// on every change and repeated while the call is held.
    case state(hold: Bool, judged: QualityTier, current: QualityTier)
    /// The callee asks the caller's node to call `target` instead (blind transfer).
    case transfer(to: WalletAddress)
    /// The caller's node could not reach the transfer target: the call stays, on hold.
    case transferFailed(CallEndReason)
    /// The caller proposes moving both ends up to `tier` at `atMs` of the call (ms since it was answered); the
    /// callee answers.
    case propose(id: UInt32, tier: QualityTier, atMs: UInt32)
    case answer(id: UInt32, accept: Bool)

    enum Kind: UInt8 { case state = 1, transfer, transferFailed, propose, answer }
}

/// A control message with its sender's side and sequence number (each side counts up from 1; a receiver takes
/// only numbers above the last it took, so a recorded message replayed by a relay changes nothing).
public struct ControlEnvelope: Equatable, Sendable {
    public var fromCaller: Bool
    public var sequence: UInt32
    public var message: ControlMessage

    public init(fromCaller: Bool, sequence: UInt32, message: ControlMessage) {
        self.fromCaller = fromCaller
        self.sequence = sequence
        self.message = message
    }

    /// side u8 (0 caller, 1 callee), sequence u32, kind u8, then the body: flags u8 (bit 0: hold), judged tier u8
    /// and current tier u8 for a state; the target's 20 bytes for a transfer; the reason byte for a failed transfer;
    /// proposal id u32, tier u8 and the call time to switch at (ms since the answer) u32 for a proposal; proposal id
    /// u32 and accept u8 for an answer.
    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 32)
        w.write(UInt8(fromCaller ? 0 : 1))
        w.write(sequence)
        switch message {
        case .state(let hold, let judged, let current):
            w.write(ControlMessage.Kind.state.rawValue)
            w.write(UInt8(hold ? 1 : 0))
            w.write(UInt8(judged.rawValue))
            w.write(UInt8(current.rawValue))
        case .propose(let id, let tier, let atMs):
            w.write(ControlMessage.Kind.propose.rawValue)
            w.write(id)
            w.write(UInt8(tier.rawValue))
            w.write(atMs)
        case .answer(let id, let accept):
            w.write(ControlMessage.Kind.answer.rawValue)
            w.write(id)
            w.write(UInt8(accept ? 1 : 0))
        case .transfer(let target):
            w.write(ControlMessage.Kind.transfer.rawValue)
            w.write(bytes: target.bytes)
        case .transferFailed(let reason):
            w.write(ControlMessage.Kind.transferFailed.rawValue)
            w.write(reason.rawValue)
        }
        return w.bytes
    }

    public init?(parsing bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let side = r.readUInt8(), side <= 1, let sequence = r.readUInt32(),
              let kind = r.readUInt8().flatMap(ControlMessage.Kind.init(rawValue:)) else { return nil }
        switch kind {
        case .state:
            guard let flags = r.readUInt8(), flags <= 1, let judged = Self.tier(&r), let current = Self.tier(&r) else { return nil }
            message = .state(hold: flags == 1, judged: judged, current: current)
        case .propose:
            guard let id = r.readUInt32(), let tier = Self.tier(&r), let atMs = r.readUInt32() else { return nil }
            message = .propose(id: id, tier: tier, atMs: atMs)
        case .answer:
            guard let id = r.readUInt32(), let accept = r.readUInt8(), accept <= 1 else { return nil }
            message = .answer(id: id, accept: accept == 1)
        case .transfer:
            guard let target = r.readBytes(20).flatMap(WalletAddress.init(bytes:)) else { return nil }
            message = .transfer(to: target)
        case .transferFailed:
            guard let reason = r.readUInt8().flatMap(CallEndReason.init(rawValue:)) else { return nil }
            message = .transferFailed(reason)
        }
        guard r.isAtEnd else { return nil }
        fromCaller = side == 0
        self.sequence = sequence
    }

    private static func tier(_ r: inout ByteReader) -> QualityTier? { r.readUInt8().flatMap { QualityTier(rawValue: Int($0)) } }
}

/// A node on a call's path (a relay, or the callee's node) stopped or let through the caller's media toward the
/// callee (quelch / unquelch), signed with that node's key. The node enforces it itself (it drops the media); the
/// notice tells both ends, and the caller's node stops sending while any node on its path quelches it.
public struct QuelchNotice: Equatable, Sendable {
    public var call: CallID
    public var on: Bool
    /// Grows with every notice the signer sends for the call (its clock in ms): an older one replayed is ignored.
    public var counter: UInt64
    public var signature: Signature

    public static func sign(call: CallID, on: Bool, counter: UInt64, key: PrivateKey) -> QuelchNotice {
        QuelchNotice(call: call, on: on, counter: counter, signature: key.sign(digest: digest(call: call, on: on, counter: counter)))
    }

    /// The node that signed it.
    public var signer: WalletAddress? { signature.recoverAddress(digest: Self.digest(call: call, on: on, counter: counter)) }

    static func digest(call: CallID, on: Bool, counter: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 40)
        w.write(bytes: Array("meshcall/v1/quelch".utf8))
        w.write(call.raw)
        w.write(UInt8(on ? 1 : 0))
        w.write(counter)
        return Keccak.hash256(w.bytes)
    }

    /// call u64, on u8, counter u64, signature (65 bytes).
    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 82)
        w.write(call.raw)
        w.write(UInt8(on ? 1 : 0))
        w.write(counter)
        w.write(bytes: signature.bytes)
        return w.bytes
    }

    public init?(parsing bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let call = r.readUInt64(), let on = r.readUInt8(), on <= 1, let counter = r.readUInt64(),
              let signature = r.readBytes(Signature.byteCount).flatMap(Signature.init(bytes:)), r.isAtEnd else { return nil }
        self.init(call: CallID(raw: call), on: on == 1, counter: counter, signature: signature)
    }

    init(call: CallID, on: Bool, counter: UInt64, signature: Signature) {
        self.call = call
        self.on = on
        self.counter = counter
        self.signature = signature
    }
}

/// One answered call's control state at one end (docs/calls.md, "Call control" and "Quality"), sans-IO: hold either
/// way, local mute, quelch by nodes on the path, a blind transfer, and the call's quality tier. Hold and the quality
/// this end judges are signalled as state, not as events: each change goes at once and again every `repeatMs` for
/// `settleMs`, and for as long as the call is held (a held call sends no media, so these repeats are what keeps it
/// alive at both ends).
///
/// Quality: the call's tier is the weakest of the relays' verdicts (while media goes over the chain), this end's
/// own judge and the other end's. A lower tier is taken at once by each end on its own (and told to the other in
/// its state): downgrades are mandatory. A higher one is proposed by the caller once every judge allows it, to take
/// effect `switchLeadMs` later in call time (ms since the answer, which both ends count from); the callee accepts
/// only if its own judges allow it too, and both switch at that call time (an acceptance that comes later switches the
/// caller at once); a rejection or no answer within `proposalTimeoutMs` cancels, and the next proposal waits
/// `coolDownMs`.
public struct CallControl: Sendable {
    public static let repeatMs: Int64 = 1_000
    public static let settleMs: Int64 = 3_000
    public static let proposalTimeoutMs: Int64 = 2_000
    public static let switchLeadMs: Int64 = 500
    /// The caller proposes once every judgement has allowed the higher tier this long (the other end's state and the
    /// relays' verdicts have had time to reach both ends).
    public static let proposeAfterMs: Int64 = 1_000
    public static let coolDownMs: Int64 = 30_000
    /// A relay's verdict not repeated for this long is forgotten (the relay left the path, or its media did).
    public static let verdictLifetimeMs: Int64 = 12_000

    public enum Event: Equatable, Sendable {
        case send(ControlEnvelope)
        /// The other end put the call on hold or took it off.
        case remoteHold(Bool)
        /// At the caller: the callee asks for a transfer to this wallet.
        case transferAsked(WalletAddress)
        /// At the callee: the caller's node could not reach the transfer target.
        case transferFailed(CallEndReason)
        /// Both ends move to this tier: this end's encoder switches now.
        case switchTier(QualityTier, why: String)
    }

    /// Where a blind transfer stands.
    public enum Transfer: Equatable, Sendable {
        /// At the callee: asked of the caller's node.
        case asked(WalletAddress)
        /// At the caller: the new call to the target is being placed.
        case placing(WalletAddress)
        /// Either end: the target could not be reached; the call stays, on hold.
        case failed(WalletAddress?, CallEndReason)
    }

    /// One relay's latest verdict on the call.
    public struct Verdict: Equatable, Sendable {
        public var tier: QualityTier
        public var figures: String
        public var counter: UInt64
        public var at: Int64
    }

    /// A move of the call's tier: when (this end's clock), from, to, and why.
    public struct TierSwitch: Equatable, Sendable, Codable {
        public var atMs: Int64
        public var from: String
        public var to: String
        public var why: String
    }

    public let caller: Bool
    public private(set) var localHold = false
    public private(set) var remoteHold = false
    /// This end's microphone is off: it sends silence (local, not signalled).
    public var muted = false
    /// This node (the callee's) drops the caller's media.
    public var quelchedHere = false
    /// Nodes on the path that quelch the caller's media now, from their signed notices.
    public private(set) var quelchedBy: Set<WalletAddress> = []
    public private(set) var transfer: Transfer?
    /// The call's tier, never above `ceiling` (the tier it started at), and the moves it made.
    public let ceiling: QualityTier
    public private(set) var tier: QualityTier
    public private(set) var tierWhy = "the tier the call started at"
    public private(set) var switches: [TierSwitch] = []
    /// This end's judge (what it receives), the other end's (from its state) and the relays'.
    public private(set) var own: QualityJudge
    public private(set) var peerJudged: QualityTier
    public private(set) var verdicts: [WalletAddress: Verdict] = [:]
    /// Media goes over a direct path: the relays carry none of it, and their verdicts do not count.
    public var direct = false
    private var sequence: UInt32 = 0
    private var lastTaken: UInt32 = 0
    private var quelchCounters: [WalletAddress: UInt64] = [:]
    private var nextRepeat: Int64?
    private var settleUntil: Int64 = .min
    private var proposal: (id: UInt32, tier: QualityTier, sentAt: Int64, at: Int64)?
    /// An accepted upgrade waiting for its call time: the tier, when (this end's clock), and why.
    private var upgrade: (tier: QualityTier, at: Int64, why: String)?
    /// Where the other end last said it stands.
    private var peerCurrent: QualityTier?
    /// Since when every judgement allows a higher tier than the call's (the caller's proposals wait `proposeAfterMs`).
    private var allowedHigherSince: Int64?
    /// When the call was answered here: call time counts from it.
    public let answeredAt: Int64
    private var proposals: UInt32 = 0
    private var coolDownUntil: Int64 = .min

    public init(caller: Bool, ceiling: QualityTier = .normal, answeredAt: Int64 = 0) {
        self.caller = caller
        self.answeredAt = answeredAt
        self.ceiling = ceiling
        tier = ceiling
        own = QualityJudge(ceiling: ceiling)
        peerJudged = ceiling
    }

    /// Either end holds the call: no media flows either way.
    public var held: Bool { localHold || remoteHold }

    /// Whether this end sends media now: not while held, and not at the caller while a node on its path quelches it.
    public var sends: Bool { !held && !(caller && !quelchedBy.isEmpty) }

    /// Whether this end plays what it receives (else comfort noise): not while held, nor where this node quelches.
    public var plays: Bool { !held && !quelchedHere }

    /// Puts the call on hold (or takes it off); nil when that is already so.
    public mutating func hold(_ on: Bool, now: Int64) -> ControlEnvelope? {
        guard localHold != on else { return nil }
        localHold = on
        return stateMessage(now: now, changed: true)
    }

    /// At the callee: asks the caller's node to call `target` instead.
    public mutating func askTransfer(to target: WalletAddress) -> ControlEnvelope? {
        guard !caller else { return nil }
        transfer = .asked(target)
        return envelope(.transfer(to: target))
    }

    /// At the caller: the new call to the transfer target failed; the callee is told and the call stays on hold.
    public mutating func transferFailed(_ reason: CallEndReason) -> ControlEnvelope? {
        guard caller, case .placing(let target) = transfer else { return nil }
        transfer = .failed(target, reason)
        return envelope(.transferFailed(reason))
    }

    /// A control message from the other end (already authenticated). Empty when it is stale, a replay, or from
    /// this end's own side.
    public mutating func receive(_ envelope: ControlEnvelope, now: Int64) -> [Event] {
        guard envelope.fromCaller != caller, envelope.sequence > lastTaken else { return [] }
        lastTaken = envelope.sequence
        switch envelope.message {
        case .state(let hold, let judged, let current):
            var events: [Event] = []
            let holdChanged = hold != remoteHold
            remoteHold = hold
            if holdChanged { events.append(.remoteHold(hold)) }
            peerJudged = judged
            // Downgrades come from the judges (the other end's is `judged`, taken above), never from where the other
            // end stands: its state may be older than a switch both agreed on. Where the caller stands is kept: a
            // callee whose agreed switch lapsed follows it up once its own judges allow (`reevaluate`).
            peerCurrent = current
            // This end says where it stands too, so that both repeat while the call is held.
            if holdChanged { events.append(.send(stateMessage(now: now, changed: true))) }
            return events + reevaluate(now: now)
        case .transfer(let target):
            guard caller, transfer == nil || isFailed else { return [] }
            transfer = .placing(target)
            var events: [Event] = [.transferAsked(target)]
            if let held = hold(true, now: now) { events.append(.send(held)) }
            return events
        case .transferFailed(let reason):
            guard !caller, case .asked(let target) = transfer else { return [] }
            transfer = .failed(target, reason)
            return [.transferFailed(reason)]
        case .propose(let id, let proposed, let atMs):
            guard !caller else { return [] }
            // Accepted whenever this end's judges allow it, also when this end is there already (the caller may have
            // missed an earlier acceptance).
            let accept = proposed <= target(now: now).tier
            if accept, proposed > tier { upgrade = (proposed, answeredAt + Int64(atMs), "upgrade proposed by the caller and accepted") }
            return [.send(self.envelope(.answer(id: id, accept: accept)))] + dueUpgrade(now: now)
        case .answer(let id, let accept):
            guard caller, let pending = proposal, pending.id == id else { return [] }
            proposal = nil
            guard accept else {
                coolDownUntil = now + Self.coolDownMs
                return []
            }
            upgrade = (pending.tier, pending.at, "upgrade accepted by the callee")
            return dueUpgrade(now: now)
        }
    }

    /// A quelch notice that arrived over the call's chain; `allowed`: the nodes whose notices count (nil: any
    /// signer, for the callee, whose chain only its path's nodes can write into). False when it changed nothing.
    public mutating func receive(_ notice: QuelchNotice, allowed: Set<WalletAddress>?) -> Bool {
        guard let signer = notice.signer, allowed?.contains(signer) ?? true,
              notice.counter > quelchCounters[signer] ?? 0 else { return false }
        quelchCounters[signer] = notice.counter
        return notice.on ? quelchedBy.insert(signer).inserted : quelchedBy.remove(signer) != nil
    }

    /// A relay's verdict that arrived over the call's chain (`allowed` as for quelch notices). Nil when refused
    /// (a signer off the path, or a replay).
    public mutating func receive(_ verdict: QualityVerdict, allowed: Set<WalletAddress>?, now: Int64) -> [Event]? {
        guard let signer = verdict.signer, allowed?.contains(signer) ?? true,
              verdict.counter > verdicts[signer]?.counter ?? 0 else { return nil }
        verdicts[signer] = Verdict(tier: verdict.tier, figures: verdict.figures, counter: verdict.counter, at: now)
        return reevaluate(now: now)
    }

    /// This end's own figures for the last second (what it receives): its judge's recommendation goes to the other
    /// end when it changes.
    public mutating func judge(_ sample: QualitySample, now: Int64) -> [Event] {
        guard own.sample(sample, now: now) else { return reevaluate(now: now) }
        return [.send(stateMessage(now: now, changed: true))] + reevaluate(now: now)
    }

    /// Repeated state, a proposal that timed out, verdicts that expired; what is due now.
    public mutating func tick(now: Int64) -> [Event] {
        var events: [Event] = []
        if let due = nextRepeat, now >= due { events.append(.send(stateMessage(now: now, changed: false))) }
        if let pending = proposal, now - pending.sentAt >= Self.proposalTimeoutMs {
            proposal = nil
            coolDownUntil = now + Self.coolDownMs
        }
        verdicts = verdicts.filter { now - $0.value.at < Self.verdictLifetimeMs }
        return events + dueUpgrade(now: now) + reevaluate(now: now)
    }

    /// The weakest judgement now and whose it is.
    public func target(now: Int64) -> (tier: QualityTier, why: String) {
        var weakest = (tier: ceiling, why: "every judge allows the call's tier")
        func take(_ tier: QualityTier, _ why: @autoclosure () -> String) {
            if tier < weakest.tier { weakest = (tier, why()) }
        }
        take(own.tier, "this end: \(own.why)")
        take(peerJudged, "the other end judged \(peerJudged.name)")
        if !direct {
            for (node, verdict) in verdicts.sorted(by: { $0.key < $1.key }) where now - verdict.at < Self.verdictLifetimeMs {
                take(verdict.tier, "relay \(node.checksummed): \(verdict.figures)")
            }
        }
        return weakest
    }

    /// Moves down at once when the weakest judgement is below the tier; at the caller, proposes a move up when every
    /// judgement is above it (no proposal pending, none refused lately).
    private mutating func reevaluate(now: Int64) -> [Event] {
        let (allowed, why) = target(now: now)
        if allowed < tier { return move(to: allowed, why: why, now: now) }
        if !caller, upgrade == nil, let up = peerCurrent, up > tier, up <= allowed {
            return move(to: up, why: "the caller is at \(up.name), which this end's judges allow", now: now)
        }
        guard allowed > tier else {
            allowedHigherSince = nil
            return []
        }
        let since = allowedHigherSince ?? now
        allowedHigherSince = since
        guard caller, now - since >= Self.proposeAfterMs, proposal == nil, upgrade == nil, now >= coolDownUntil else { return [] }
        proposals += 1
        let at = now + Self.switchLeadMs
        proposal = (proposals, allowed, now, at)
        return [.send(envelope(.propose(id: proposals, tier: allowed, atMs: UInt32(clamping: at - answeredAt))))]
    }

    /// An accepted upgrade whose call time has come (while every judge still allows it; else it lapses).
    private mutating func dueUpgrade(now: Int64) -> [Event] {
        guard let pending = upgrade, now >= pending.at else { return [] }
        upgrade = nil
        guard pending.tier <= target(now: now).tier else { return [] }
        return move(to: pending.tier, why: pending.why, now: now)
    }

    private mutating func move(to next: QualityTier, why: String, now: Int64) -> [Event] {
        guard next != tier else { return [] }
        if next < tier { upgrade = nil }
        switches.append(TierSwitch(atMs: now, from: tier.name, to: next.name, why: why))
        tier = next
        tierWhy = why
        if let pending = proposal, pending.tier <= next { proposal = nil }
        return [.switchTier(next, why: why), .send(stateMessage(now: now, changed: true))]
    }

    private var isFailed: Bool {
        if case .failed = transfer { return true }
        return false
    }

    private mutating func stateMessage(now: Int64, changed: Bool) -> ControlEnvelope {
        if changed { settleUntil = now + Self.settleMs }
        nextRepeat = held || now < settleUntil ? now + Self.repeatMs : nil
        return envelope(.state(hold: localHold, judged: own.tier, current: tier))
    }

    private mutating func envelope(_ message: ControlMessage) -> ControlEnvelope {
        sequence += 1
        return ControlEnvelope(fromCaller: caller, sequence: sequence, message: message)
    }
}
