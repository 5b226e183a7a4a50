import MeshWire

/// The node's STUN server (docs/stun.md): answers Binding Requests on the node's UDP port with the source's
/// address as XOR-MAPPED-ADDRESS, so every node with a public address is a STUN server for the others (RFC 7983
/// puts first bytes 0–3 on a shared port to STUN). Pure: the shell hands in each datagram with its source and
/// the clock, and sends the answer it gets back.
///
/// Only plain Binding Requests are answered, RFC 5389 ones and RFC 3489 ones (libnice gathers with the latter):
/// no comprehension-required attribute except a CHANGE-REQUEST that asks for no change (RFC 3489 clients send
/// one with every request). A request carrying any other (USERNAME, MESSAGE-INTEGRITY, RESPONSE-ADDRESS, a real
/// CHANGE-REQUEST, ICE's PRIORITY…) is dropped rather than answered with a 420 error: the node keeps no STUN
/// credentials, offers no RFC 5780 tests and never answers to another address than the source, and an error
/// response would be a second kind of answer for a spoofed source to reflect. Nothing else STUN-shaped is
/// answered (responses, indications, other methods): each is dropped and counted by reason.
///
/// So that the node cannot be used as a reflector against a spoofed source, answers are limited per source host
/// (`perHost`) and in all (`total`): an answer (40 bytes for IPv4, 52 for IPv6) is at most 2.6 times its request
/// (20 bytes at least), and the budgets bound what any one victim can receive to a few KB/s.
public struct StunResponder: Sendable {
    public struct Config: Sendable {
        /// Per source host: ICE gathering sends a handful of requests per server (with retransmissions), and a NAT
        /// keepalive one every few seconds; 10/s with a burst of 20 leaves room for many agents behind one NAT.
        public var perHost = TokenBucket.Rate(perSecond: 10, burst: 20)
        /// All sources together.
        public var total = TokenBucket.Rate(perSecond: 2_000, burst: 2_000)
        /// Source hosts remembered; beyond this, new ones share one bucket.
        public var maxTracked = 4_096
        public init() {}
    }

    /// What became of each STUN-shaped datagram.
    public struct Counters: Sendable, Equatable {
        public var requests = 0
        public var answered = 0
        /// Not a well-formed STUN message (header, length, attributes, fingerprint).
        public var malformed = 0
        /// Well formed but not a Binding Request (responses, indications, other methods).
        public var notBindingRequest = 0
        /// A Binding Request with a comprehension-required attribute (it is not answered).
        public var unknownAttribute = 0
        public var rateLimited = 0
        public init() {}
    }

    public enum Verdict: Sendable, Equatable {
        case answer([UInt8])
        case drop(DropReason)
    }

    public enum DropReason: String, Sendable, CaseIterable {
        case malformed, notBindingRequest, unknownAttribute, rateLimited
    }

    public let config: Config
    public private(set) var counters = Counters()
    private var hosts: [[UInt8]: TokenBucket] = [:]
    private var total: TokenBucket
    private var nextPruneMs = Int64.min
    private static let overflowKey: [UInt8] = []

    public init(config: Config = Config(), nowMs: Int64) {
        self.config = config
        total = TokenBucket(config.total, nowMs: nowMs)
    }

    /// Judges one datagram whose first byte is 0–3 from `source`: the answer to send back to it, or why not.
    public mutating func receive(_ datagram: [UInt8], from source: StunAddress, nowMs: Int64) -> Verdict {
        let verdict = judge(datagram, from: source, nowMs: nowMs)
        switch verdict {
        case .answer: counters.answered += 1
        case .drop(.malformed): counters.malformed += 1
        case .drop(.notBindingRequest): counters.notBindingRequest += 1
        case .drop(.unknownAttribute): counters.unknownAttribute += 1
        case .drop(.rateLimited): counters.rateLimited += 1
        }
        return verdict
    }

    private mutating func judge(_ datagram: [UInt8], from source: StunAddress, nowMs: Int64) -> Verdict {
        guard let message = try? StunMessage(parsing: datagram) else { return .drop(.malformed) }
        guard message.type == .bindingRequest else { return .drop(.notBindingRequest) }
        counters.requests += 1
        guard message.attributes.allSatisfy(Self.isHarmless) else { return .drop(.unknownAttribute) }
        guard admit(source.ip, nowMs: nowMs) else { return .drop(.rateLimited) }
        return .answer(StunMessage.bindingSuccess(transactionID: message.transactionID, mapped: source))
    }

    /// Comprehension-optional, or a CHANGE-REQUEST with neither flag set.
    private static func isHarmless(_ attribute: StunMessage.Attribute) -> Bool {
        !StunMessage.AttributeType.isComprehensionRequired(attribute.type)
            || attribute.type == StunMessage.AttributeType.changeRequest && attribute.value == [0, 0, 0, 0]
    }

    /// Takes a token from the host's bucket and the total; nothing is taken when either is empty.
    private mutating func admit(_ host: [UInt8], nowMs: Int64) -> Bool {
        prune(nowMs: nowMs)
        let key = hosts[host] != nil || hosts.count < config.maxTracked ? host : Self.overflowKey
        var bucket = hosts[key] ?? TokenBucket(config.perHost, nowMs: nowMs)
        let allowed = bucket.refill(config.perHost, nowMs: nowMs) >= 1 && total.refill(config.total, nowMs: nowMs) >= 1
        if allowed {
            bucket.spend()
            total.spend()
        }
        hosts[key] = bucket
        return allowed
    }

    /// Forgets hosts whose buckets have filled up again (they behave as new); at most once a second.
    private mutating func prune(nowMs: Int64) {
        guard nowMs >= nextPruneMs else { return }
        nextPruneMs = nowMs + 1_000
        let rate = config.perHost
        hosts = hosts.filter { var b = $0.value; return b.refill(rate, nowMs: nowMs) < rate.burst }
    }

    /// Hosts with a bucket now (for tests of the bound).
    public var trackedHosts: Int { hosts.count }
}
