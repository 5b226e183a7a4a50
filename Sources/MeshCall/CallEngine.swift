import MeshIdentity
import MeshLink
import MeshWire

public struct CallConfig: Sendable {
    /// The caller re-sends its offer this often until it is answered (signalling rides on UDP links).
    public var offerRetryMs: Int64 = 1_000
    /// With no ringing, reject or answer this long after the offer, the call fails with "no response".
    public var noResponseMs: Int64 = 5_000
    /// A call that rings this long without an answer ends with "no answer".
    public var noAnswerMs: Int64 = 30_000
    /// An active call with no media in either direction for this long ends with "media timeout".
    public var mediaTimeoutMs: Int64 = 10_000
    /// Ended calls are remembered this long, to answer late retransmissions and for `node-ctl calls`.
    public var endedMemoryMs: Int64 = 30_000
    /// An offer is taken only while its signed timestamp is within this much of the callee's clock, and the
    /// ids of offers taken are remembered for twice as long: a recorded offer replayed later never rings again.
    public var offerMaxSkewMs: Int64 = 120_000
    public init() {}
}

public enum CallRole: String, Sendable, Codable { case caller, callee }
public enum CallState: String, Sendable, Codable { case offering, ringing, active, ended }

/// The SRTP master keys (16-byte key + 14-byte salt) for each direction, from the end-to-end key agreement.
public struct SRTPKeys: Sendable, Equatable {
    public let send: [UInt8]
    public let receive: [UInt8]

    public init(send: [UInt8], receive: [UInt8]) {
        self.send = send
        self.receive = receive
    }
}

/// What the call layer knows about one call.
public struct CallRecord: Sendable {
    public let id: CallID
    public let role: CallRole
    public let local: WalletAddress
    public let remote: WalletAddress
    /// The node at the far end of the call's chain: the callee's home node, or the caller's node.
    public let via: WalletAddress
    public let bitrate: Int
    public internal(set) var state: CallState
    public let startedAt: Int64
    public internal(set) var answeredAt: Int64?
    public internal(set) var endedAt: Int64?
    public internal(set) var endReason: CallEndReason?
    var secret: [UInt8]
    var offer: CallMessage.Offer?
    var answer: CallMessage.Answer?
    var lastOfferSentAt: Int64 = 0
    var lastMediaAt: Int64 = 0
}

public enum CallAction: Sendable, Equatable {
    /// A signalling message for the call's chain, whose far end is the node `to`.
    case send([UInt8], to: WalletAddress)
    case incoming(CallID, caller: WalletAddress, callee: WalletAddress)
    case ringing(CallID)
    case established(CallID, SRTPKeys)
    case ended(CallID, CallEndReason)
}

/// The call state machine of one node for the wallets it hosts, sans-IO (docs/calls.md).
public struct CallEngine: Sendable {
    public let config: CallConfig
    private let wallets: [WalletAddress: PrivateKey]
    public private(set) var calls: [CallID: CallRecord] = [:]
    /// Signalling messages that failed to parse or verify.
    public private(set) var malformed = 0
    /// Offers refused because their timestamp was too far from this node's clock.
    public private(set) var staleOffers = 0
    /// The offers taken lately: when, and the refusal sent (nil: it rang).
    private var recentOffers: [CallID: (at: Int64, refusal: CallEndReason?)] = [:]
    /// The wall clock, for offers' signed timestamps (the shell keeps it current; `now` is monotonic).
    public var clock = WallClock()

    /// Ephemeral keys come from here.
    private let random: LinkRandom

    public init(wallets: [PrivateKey], config: CallConfig = CallConfig(), random: LinkRandom = .secure) {
        self.wallets = Dictionary(wallets.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        self.config = config
        self.random = random
    }

    public var hostedWallets: [WalletAddress] { wallets.keys.sorted() }
    public func hosts(_ address: WalletAddress) -> Bool { wallets[address] != nil }

    // MARK: commands

    /// Starts a call from a hosted wallet to `remote`, whose home node is `via` (the far end of the call's chain),
    /// with the id the chain was built for (or one drawn from the engine's random source). Nil when the wallet is not hosted here or is already in a call (one
    /// call per wallet), other than `replacing` (the call a blind transfer moves from).
    public mutating func place(id: CallID? = nil, from local: WalletAddress, to remote: WalletAddress, via: WalletAddress,
                               bitrate: Int, replacing: CallID? = nil, now: Int64) -> (CallID, [CallAction])? {
        let id = id ?? CallID(raw: random.bytes(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        guard let key = wallets[local], !inCall(local, besides: replacing), calls[id] == nil else { return nil }
        let (secret, ephemeral) = LinkCrypto.keyPair(secret: random.bytes(32))
        let timestamp = UInt64(max(clock.wall(now), 0))
        let signed = CallMessage.Offer.signedPart(callID: id, caller: local, callee: remote, ephemeral: ephemeral,
                                                  timestampMs: timestamp, bitrate: UInt32(clamping: bitrate))
        let offer = CallMessage.Offer(callID: id, caller: local, callee: remote, ephemeral: ephemeral, timestampMs: timestamp,
                                      bitrate: UInt32(clamping: bitrate), signature: key.sign(digest: Keccak.hash256(signed)))
        var record = CallRecord(id: id, role: .caller, local: local, remote: remote, via: via, bitrate: bitrate,
                                state: .offering, startedAt: now, secret: secret, offer: offer)
        record.lastOfferSentAt = now
        calls[id] = record
        return (id, [.send(CallMessage.offer(offer).serialize(), to: via)])
    }

    /// The callee's side accepts a ringing call.
    public mutating func answer(_ id: CallID, now: Int64) -> [CallAction] {
        guard var call = calls[id], call.role == .callee, call.state == .ringing, let offer = call.offer,
              let key = wallets[call.local] else { return [] }
        let (secret, ephemeral) = LinkCrypto.keyPair(secret: random.bytes(32))
        let digest = CallMessage.Answer.digest(offerDigest: offer.digest, callID: id, ephemeral: ephemeral)
        let answer = CallMessage.Answer(callID: id, ephemeral: ephemeral, signature: key.sign(digest: digest))
        guard let keys = Self.srtpKeys(secret: secret, peer: offer.ephemeral, offer: offer, answer: answer, role: .callee) else {
            return end(id, reason: .failed, notify: true, now: now)
        }
        call.secret = secret
        call.answer = answer
        call.state = .active
        call.answeredAt = now
        call.lastMediaAt = now
        calls[id] = call
        return [.send(CallMessage.answer(answer).serialize(), to: call.via), .established(id, keys)]
    }

    /// Ends a call from this side (hangup, or reject while it rings).
    public mutating func hangup(_ id: CallID, reason: CallEndReason = .normal, now: Int64) -> [CallAction] {
        end(id, reason: reason, notify: true, now: now)
    }

    /// Media arrived for a call: it is alive.
    public mutating func mediaArrived(_ id: CallID, now: Int64) {
        calls[id]?.lastMediaAt = now
    }

    /// The call's chain is lost for good (no relay chain could be rebuilt): the call ends without a goodbye.
    public mutating func chainLost(_ id: CallID, now: Int64) -> [CallAction] {
        end(id, reason: .linkLost, notify: false, now: now)
    }

    // MARK: inputs

    public mutating func receive(_ bytes: [UInt8], from node: WalletAddress, now: Int64) -> [CallAction] {
        guard let message = CallMessage(parsing: bytes) else {
            malformed += 1
            return []
        }
        if case .offer(let offer) = message { return receiveOffer(offer, from: node, now: now) }
        guard let call = calls[message.callID], call.via == node else {
            if case .hangup = message { return [] }
            if case .reject = message { return [] }
            return [.send(CallMessage.hangup(message.callID, .failed).serialize(), to: node)]
        }
        switch message {
        case .offer:
            return []
        case .ringing:
            guard call.role == .caller, call.state == .offering else { return [] }
            calls[call.id]?.state = .ringing
            return [.ringing(call.id)]
        case .answer(let answer):
            return receiveAnswer(answer, call: call, now: now)
        case .reject(_, let reason), .hangup(_, let reason):
            return end(call.id, reason: reason, notify: false, now: now)
        }
    }

    /// When `tick` next has something to do: an offer to repeat or give up on, a call unanswered or silent for too
    /// long, an ended call to forget. Nil without calls.
    public var nextDeadline: Int64? {
        var next = Int64.max
        for call in calls.values {
            switch call.state {
            case .offering, .ringing:
                next = min(next, call.startedAt + (call.state == .offering ? config.noResponseMs : config.noAnswerMs))
                if call.role == .caller, call.offer != nil { next = min(next, call.lastOfferSentAt + config.offerRetryMs) }
            case .active: next = min(next, call.lastMediaAt + config.mediaTimeoutMs)
            case .ended: if let endedAt = call.endedAt { next = min(next, endedAt + config.endedMemoryMs) }
            }
        }
        return next == .max ? nil : next
    }

    public mutating func tick(now: Int64) -> [CallAction] {
        var actions: [CallAction] = []
        for call in calls.values.sorted(by: { $0.id < $1.id }) {
            switch call.state {
            case .offering, .ringing:
                let limit = call.state == .offering ? config.noResponseMs : config.noAnswerMs
                if now - call.startedAt >= limit {
                    actions += end(call.id, reason: call.state == .offering ? .noResponse : .noAnswer, notify: true, now: now)
                } else if call.role == .caller, let offer = call.offer, now - call.lastOfferSentAt >= config.offerRetryMs {
                    calls[call.id]?.lastOfferSentAt = now
                    actions.append(.send(CallMessage.offer(offer).serialize(), to: call.via))
                }
            case .active:
                if now - call.lastMediaAt >= config.mediaTimeoutMs {
                    actions += end(call.id, reason: .mediaTimeout, notify: true, now: now)
                }
            case .ended:
                if let endedAt = call.endedAt, now - endedAt >= config.endedMemoryMs { calls[call.id] = nil }
            }
        }
        recentOffers = recentOffers.filter { now - $0.value.at < 2 * config.offerMaxSkewMs }
        return actions
    }

    // MARK: internals

    /// A hosted wallet has one call at a time (`besides`: not counting that one).
    public func inCall(_ wallet: WalletAddress, besides: CallID? = nil) -> Bool {
        calls.values.contains { $0.local == wallet && $0.state != .ended && $0.id != besides }
    }

    private mutating func receiveOffer(_ offer: CallMessage.Offer, from node: WalletAddress, now: Int64) -> [CallAction] {
        let id = offer.callID
        if let existing = calls[id] {
            guard existing.via == node, existing.role == .callee else { return [] }
            switch existing.state {
            case .offering, .ringing: return [.send(CallMessage.ringing(id).serialize(), to: node)]
            case .active: return existing.answer.map { [.send(CallMessage.answer($0).serialize(), to: node)] } ?? []
            case .ended: return [.send(CallMessage.reject(id, existing.endReason ?? .normal).serialize(), to: node)]
            }
        }
        // An offer already taken is not taken again: a refused one gets its refusal again (the first may have been
        // lost), one whose call is over and forgotten gets nothing.
        if let taken = recentOffers[id] {
            return taken.refusal.map { [.send(CallMessage.reject(id, $0).serialize(), to: node)] } ?? []
        }
        guard offer.isAuthentic else {
            malformed += 1
            return [.send(CallMessage.reject(id, .badSignature).serialize(), to: node)]
        }
        guard abs(clock.wall(now) - Int64(clamping: offer.timestampMs)) <= config.offerMaxSkewMs else {
            staleOffers += 1
            return [.send(CallMessage.reject(id, .staleOffer).serialize(), to: node)]
        }
        let refusal: CallEndReason? = wallets[offer.callee] == nil ? .unknownCallee : inCall(offer.callee) ? .busy : nil
        recentOffers[id] = (now, refusal)
        if let refusal { return [.send(CallMessage.reject(id, refusal).serialize(), to: node)] }
        calls[id] = CallRecord(id: id, role: .callee, local: offer.callee, remote: offer.caller, via: node,
                               bitrate: Self.bitrates.clamped(Int(offer.bitrate)), state: .ringing, startedAt: now, secret: [],
                               offer: offer)
        return [.send(CallMessage.ringing(id).serialize(), to: node), .incoming(id, caller: offer.caller, callee: offer.callee)]
    }

    private mutating func receiveAnswer(_ answer: CallMessage.Answer, call: CallRecord, now: Int64) -> [CallAction] {
        guard call.role == .caller, let offer = call.offer else { return [] }
        guard call.state == .offering || call.state == .ringing else { return [] }
        let digest = CallMessage.Answer.digest(offerDigest: offer.digest, callID: call.id, ephemeral: answer.ephemeral)
        guard answer.signature.recoverAddress(digest: digest) == call.remote,
              let keys = Self.srtpKeys(secret: call.secret, peer: answer.ephemeral, offer: offer, answer: answer, role: .caller)
        else {
            malformed += 1
            return end(call.id, reason: .badSignature, notify: true, now: now)
        }
        calls[call.id]?.answer = answer
        calls[call.id]?.state = .active
        calls[call.id]?.answeredAt = now
        calls[call.id]?.lastMediaAt = now
        return [.established(call.id, keys)]
    }

    private mutating func end(_ id: CallID, reason: CallEndReason, notify: Bool, now: Int64) -> [CallAction] {
        guard var call = calls[id], call.state != .ended else { return [] }
        let ringingCallee = call.role == .callee && call.state == .ringing
        call.state = .ended
        call.endedAt = now
        call.endReason = reason
        call.secret = []
        calls[id] = call
        var actions: [CallAction] = []
        if notify {
            let message: CallMessage = ringingCallee ? .reject(id, reason) : .hangup(id, reason)
            actions.append(.send(message.serialize(), to: call.via))
        }
        actions.append(.ended(id, reason))
        return actions
    }

    /// Opus bitrates a call may ask for; an offer's value is clamped into this range.
    static let bitrates = 6_000...128_000

    /// Both directions' SRTP master keys from X25519 of the two signed ephemerals, bound to both signed messages.
    static func srtpKeys(secret: [UInt8], peer: [UInt8], offer: CallMessage.Offer, answer: CallMessage.Answer,
                         role: CallRole) -> SRTPKeys? {
        guard let shared = LinkCrypto.sharedSecret(secret: secret, peerPublic: peer) else { return nil }
        let transcript = Array("meshcall/v1/srtp".utf8) + offer.digest + answer.signature.bytes
        let material = LinkCrypto.hash(transcript, key: shared, length: 60)
        let callerToCallee = Array(material[0..<30])
        let calleeToCaller = Array(material[30..<60])
        return role == .caller ? SRTPKeys(send: callerToCallee, receive: calleeToCaller)
                               : SRTPKeys(send: calleeToCaller, receive: callerToCallee)
    }
}

extension ClosedRange where Bound == Int {
    func clamped(_ value: Int) -> Int { Swift.min(Swift.max(value, lowerBound), upperBound) }
}
