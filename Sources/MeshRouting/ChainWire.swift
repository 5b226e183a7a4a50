import MeshIdentity
import MeshWire

/// One chain of one call: the call id and a chain id the caller picks per chain (a call may hold several).
public struct ChainKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let call: UInt64
    public let chain: UInt32
    public init(call: UInt64, chain: UInt32) {
        self.call = call
        self.chain = chain
    }
    public static func < (a: ChainKey, b: ChainKey) -> Bool { (a.call, a.chain) < (b.call, b.chain) }
    public var description: String { Hex.padded(chain) }
}

/// One hop's link as a hop measured it: the node that measured and its link toward the callee's end.
public struct HopFigures: Sendable, Equatable, Codable {
    public var node: WalletAddress
    /// Smoothed RTT of the link to the next node, in ms (nil before the first sample).
    public var rttMs: Double?
    public var lossPercent: Double

    public init(node: WalletAddress, rttMs: Double?, lossPercent: Double) {
        self.node = node
        self.rttMs = rttMs
        self.lossPercent = lossPercent
    }

    static let bytes = 20 + 2 + 2

    enum CodingKeys: String, CodingKey { case node, rttMs, lossPercent }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(node.checksummed, forKey: .node)
        try c.encode(rttMs, forKey: .rttMs)
        try c.encode(lossPercent, forKey: .lossPercent)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        node = try WalletAddress(parsing: try c.decode(String.self, forKey: .node))
        rttMs = try c.decodeIfPresent(Double.self, forKey: .rttMs)
        lossPercent = try c.decode(Double.self, forKey: .lossPercent)
    }

    func write(to w: inout ByteWriter) {
        w.write(bytes: node.bytes)
        // Tenths of a millisecond (0xFFFF: no sample yet) and loss in per mille.
        w.write(rttMs.map { UInt16(clamping: Int(($0 * 10).rounded())) }.map { min($0, 0xFFFE) } ?? 0xFFFF)
        w.write(UInt16(clamping: Int((lossPercent * 10).rounded())))
    }

    static func read(_ r: inout ByteReader) -> HopFigures? {
        guard let node = r.readBytes(20).flatMap(WalletAddress.init(bytes:)), let rtt = r.readUInt16(),
              let loss = r.readUInt16(), loss <= 1_000 else { return nil }
        return HopFigures(node: node, rttMs: rtt == 0xFFFF ? nil : Double(rtt) / 10, lossPercent: Double(loss) / 10)
    }
}

/// Why a hop refused a chain set-up, or tore a chain down; one byte on the wire (docs/forwarding.md).
public enum ChainRefusal: UInt8, Sendable, Codable, CustomStringConvertible {
    case sessionLimit = 1
    case neighbourLimit = 2
    case hopLimit = 3
    case noRoute = 4
    case badSignature = 5
    case expired = 6
    case timeout = 7
    case duplicate = 8
    case linkDown = 9
    case closed = 10
    case idle = 11
    case replaced = 12
    case rateLimited = 13

    public var description: String {
        switch self {
        case .sessionLimit: "session limit reached"
        case .neighbourLimit: "session limit for this neighbour reached"
        case .hopLimit: "hop limit reached"
        case .noRoute: "no route"
        case .badSignature: "bad signature"
        case .expired: "set-up expired"
        case .timeout: "no answer from the next hop"
        case .duplicate: "chain already set up through another neighbour"
        case .linkDown: "link down"
        case .closed: "closed"
        case .idle: "idle"
        case .replaced: "replaced"
        case .rateLimited: "too many set-ups from this neighbour"
        }
    }

    /// Refusals that say something about one relay (a full relay), not about the route: a hop that gets one from
    /// a neighbour tries the next candidate, and the most telling reason travels back.
    var rank: Int {
        switch self {
        case .sessionLimit, .neighbourLimit: 3
        case .hopLimit: 2
        case .timeout, .duplicate, .rateLimited: 1
        default: 0
        }
    }
}

/// Link payloads of the forwarding layer (docs/forwarding.md); tags 0x30–0x38 of the link application byte.
public enum ChainMessage: Equatable, Sendable {
    /// A chain set-up travelling toward `target`, signed by the caller's wallet.
    case setup(Setup)
    /// The chain from the sender on is installed: send to it with `label`. `figures`: every hop's link from here on.
    case accept(ChainKey, label: UInt32, figures: [HopFigures])
    case refuse(ChainKey, ChainRefusal, by: WalletAddress)
    /// Remove the chain; passed on to the other side.
    case teardown(ChainKey, ChainRefusal)
    /// End-to-end bytes for the session the receiver knows as `label`.
    case data(label: UInt32, [UInt8])
    /// A live figures report travelling toward the callee; every relay appends its link's figures.
    case report(label: UInt32, [HopFigures])
    /// The completed report travelling back to the caller, passed on unchanged.
    case reportBack(label: UInt32, [HopFigures])

    public struct Setup: Equatable, Sendable {
        public var key: ChainKey
        /// The caller's wallet, whose key signs the set-up.
        public var caller: WalletAddress
        /// The node the chain ends at (the callee's home node).
        public var target: WalletAddress
        /// Unix ms after which no hop installs the chain.
        public var expiresAtMs: UInt64
        /// Links the chain may have at most.
        public var hopLimit: UInt8
        public var signature: Signature
        /// The label the sender takes packets from the receiver with.
        public var backLabel: UInt32
        /// The nodes so far, the caller's node first (never revisited: loop check).
        public var path: [WalletAddress]
        /// Nodes the chain should avoid (the relays of the call's other chain, for a disjoint standby).
        public var avoid: [WalletAddress]

        static let label = Array("meshchain/v1/setup".utf8)

        public static func signedPart(key: ChainKey, caller: WalletAddress, target: WalletAddress, expiresAtMs: UInt64,
                                      hopLimit: UInt8) -> [UInt8] {
            var w = ByteWriter(capacity: 61)
            w.write(key.call)
            w.write(key.chain)
            w.write(bytes: caller.bytes)
            w.write(bytes: target.bytes)
            w.write(expiresAtMs)
            w.write(hopLimit)
            return w.bytes
        }

        public var isAuthentic: Bool {
            signature.signer(label: Self.label, body: Self.signedPart(key: key, caller: caller, target: target,
                                                                      expiresAtMs: expiresAtMs, hopLimit: hopLimit)) == caller
        }

        public static func sign(key: ChainKey, wallet: PrivateKey, target: WalletAddress, expiresAtMs: UInt64, hopLimit: UInt8,
                                backLabel: UInt32, path: [WalletAddress], avoid: [WalletAddress]) -> Setup {
            let body = signedPart(key: key, caller: wallet.address, target: target, expiresAtMs: expiresAtMs, hopLimit: hopLimit)
            return Setup(key: key, caller: wallet.address, target: target, expiresAtMs: expiresAtMs, hopLimit: hopLimit,
                         signature: wallet.sign(label: label, body: body), backLabel: backLabel, path: path, avoid: avoid)
        }
    }

    enum Tag: UInt8 {
        case setup = 0x30, accept = 0x31, refuse = 0x32, teardown = 0x33, data = 0x34, report = 0x37, reportBack = 0x38
    }

    /// Whether a link payload is a data message (the forwarding path, parsed in place).
    public static func isData(_ payload: some Collection<UInt8>) -> Bool { payload.first == Tag.data.rawValue }

    /// Whether a link payload belongs to this layer.
    public static func claims(_ payload: [UInt8]) -> Bool {
        payload.first.flatMap(Tag.init(rawValue:)) != nil
    }

    /// Most nodes a path, avoid list or figures list may hold.
    static let maxNodes = 16

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        switch self {
        case .setup(let s):
            w.write(Tag.setup.rawValue)
            w.write(bytes: Setup.signedPart(key: s.key, caller: s.caller, target: s.target, expiresAtMs: s.expiresAtMs,
                                            hopLimit: s.hopLimit))
            w.write(bytes: s.signature.bytes)
            w.write(s.backLabel)
            Self.write(s.path, to: &w)
            Self.write(s.avoid, to: &w)
        case .accept(let key, let label, let figures):
            w.write(Tag.accept.rawValue)
            Self.write(key, to: &w)
            w.write(label)
            Self.write(figures, to: &w)
        case .refuse(let key, let reason, let by):
            w.write(Tag.refuse.rawValue)
            Self.write(key, to: &w)
            w.write(reason.rawValue)
            w.write(bytes: by.bytes)
        case .teardown(let key, let reason):
            w.write(Tag.teardown.rawValue)
            Self.write(key, to: &w)
            w.write(reason.rawValue)
        case .data(let label, let inner):
            return Self.data(label: label, inner)
        case .report(let label, let figures), .reportBack(let label, let figures):
            if case .report = self { w.write(Tag.report.rawValue) } else { w.write(Tag.reportBack.rawValue) }
            w.write(label)
            Self.write(figures, to: &w)
        }
        return w.bytes
    }

    /// A data message without building the enum (the forwarding path's shape).
    public static func data(label: UInt32, _ inner: [UInt8]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 5 + inner.count)
        bytes[0] = Tag.data.rawValue
        setLabel(label, in: &bytes)
        bytes.replaceSubrange(5..., with: inner)
        return bytes
    }

    /// The label of a data, report or report-back message, read in place.
    static func label<Bytes: RandomAccessCollection<UInt8>>(of bytes: Bytes) -> UInt32? where Bytes.Index == Int {
        guard bytes.count >= 5 else { return nil }
        let b = bytes.startIndex
        return UInt32(bytes[b + 1]) << 24 | UInt32(bytes[b + 2]) << 16 | UInt32(bytes[b + 3]) << 8 | UInt32(bytes[b + 4])
    }

    /// Rewrites the label of a data message in place: all a relay does to a packet it forwards.
    static func setLabel(_ label: UInt32, in bytes: inout [UInt8]) {
        bytes[1] = UInt8(truncatingIfNeeded: label >> 24)
        bytes[2] = UInt8(truncatingIfNeeded: label >> 16)
        bytes[3] = UInt8(truncatingIfNeeded: label >> 8)
        bytes[4] = UInt8(truncatingIfNeeded: label)
    }

    public init?(parsing bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let tag = r.readUInt8().flatMap(Tag.init(rawValue:)) else { return nil }
        switch tag {
        case .setup:
            guard let key = Self.readKey(&r), let caller = Self.readNode(&r), let target = Self.readNode(&r),
                  let expires = r.readUInt64(), let hopLimit = r.readUInt8(),
                  let signature = r.readBytes(Signature.byteCount).flatMap(Signature.init(bytes:)),
                  let back = r.readUInt32(), back != 0, let path = Self.readNodes(&r), !path.isEmpty,
                  let avoid = Self.readNodes(&r), r.isAtEnd else { return nil }
            self = .setup(Setup(key: key, caller: caller, target: target, expiresAtMs: expires, hopLimit: hopLimit,
                                signature: signature, backLabel: back, path: path, avoid: avoid))
        case .accept:
            guard let key = Self.readKey(&r), let label = r.readUInt32(), label != 0, let figures = Self.readFigures(&r),
                  r.isAtEnd else { return nil }
            self = .accept(key, label: label, figures: figures)
        case .refuse:
            guard let key = Self.readKey(&r), let reason = r.readUInt8().flatMap(ChainRefusal.init(rawValue:)),
                  let by = Self.readNode(&r), r.isAtEnd else { return nil }
            self = .refuse(key, reason, by: by)
        case .teardown:
            guard let key = Self.readKey(&r), let reason = r.readUInt8().flatMap(ChainRefusal.init(rawValue:)), r.isAtEnd
            else { return nil }
            self = .teardown(key, reason)
        case .data:
            guard let label = r.readUInt32() else { return nil }
            self = .data(label: label, r.readRest())
        case .report, .reportBack:
            guard let label = r.readUInt32(), let figures = Self.readFigures(&r), r.isAtEnd else { return nil }
            self = tag == .report ? .report(label: label, figures) : .reportBack(label: label, figures)
        }
    }

    private static func write(_ key: ChainKey, to w: inout ByteWriter) {
        w.write(key.call)
        w.write(key.chain)
    }

    private static func write(_ nodes: [WalletAddress], to w: inout ByteWriter) {
        w.write(UInt8(nodes.count))
        for node in nodes { w.write(bytes: node.bytes) }
    }

    private static func write(_ figures: [HopFigures], to w: inout ByteWriter) {
        w.write(UInt8(figures.count))
        for f in figures { f.write(to: &w) }
    }

    private static func readKey(_ r: inout ByteReader) -> ChainKey? {
        guard let call = r.readUInt64(), let chain = r.readUInt32() else { return nil }
        return ChainKey(call: call, chain: chain)
    }

    private static func readNode(_ r: inout ByteReader) -> WalletAddress? {
        r.readBytes(20).flatMap(WalletAddress.init(bytes:))
    }

    private static func readNodes(_ r: inout ByteReader) -> [WalletAddress]? {
        guard let count = r.readUInt8(), count <= maxNodes else { return nil }
        var nodes: [WalletAddress] = []
        for _ in 0..<count {
            guard let node = readNode(&r) else { return nil }
            nodes.append(node)
        }
        return nodes
    }

    private static func readFigures(_ r: inout ByteReader) -> [HopFigures]? {
        guard let count = r.readUInt8(), count <= maxNodes else { return nil }
        var figures: [HopFigures] = []
        for _ in 0..<count {
            guard let f = HopFigures.read(&r) else { return nil }
            figures.append(f)
        }
        return figures
    }
}

/// End-to-end payloads inside a chain's data messages: the call's own bytes, and the ends' probes.
public enum ChainInner: Equatable, Sendable {
    /// Call signalling or media for the call layer (its first byte is the call layer's tag).
    case call([UInt8])
    /// The caller's liveness probe, on its active chain or on the standby; the callee's end answers with a pong
    /// carrying the same numbers, and replies on the chain of the latest active probe (call bytes do not move them:
    /// relays inject their own). Once the call is answered both carry an 8-byte MAC under a key only the two ends
    /// hold (`ProbeKey`): a relay can neither answer probes for a callee it cuts off nor move the callee's replies.
    case probe(sequence: UInt32, sentAtMs: UInt64, active: Bool = true, mac: [UInt8] = [])
    case pong(sequence: UInt32, sentAtMs: UInt64, mac: [UInt8] = [])

    static let probeTag: UInt8 = 0x35
    static let pongTag: UInt8 = 0x36
    static let standbyProbeTag: UInt8 = 0x37

    func serialize() -> [UInt8] {
        let tag: UInt8
        let numbers: (UInt32, UInt64)
        let mac: [UInt8]
        switch self {
        case .call(let bytes): return bytes
        case .probe(let seq, let at, let active, let m): (tag, numbers, mac) = (active ? Self.probeTag : Self.standbyProbeTag, (seq, at), m)
        case .pong(let seq, let at, let m): (tag, numbers, mac) = (Self.pongTag, (seq, at), m)
        }
        var w = ByteWriter(capacity: 13 + mac.count)
        w.write(tag)
        w.write(numbers.0)
        w.write(numbers.1)
        w.write(bytes: mac)
        return w.bytes
    }

    init?(parsing bytes: ArraySlice<UInt8>) {
        guard let first = bytes.first else { return nil }
        guard [Self.probeTag, Self.pongTag, Self.standbyProbeTag].contains(first) else {
            self = .call(Array(bytes))
            return
        }
        var r = ByteReader(Array(bytes.dropFirst()))
        guard let seq = r.readUInt32(), let at = r.readUInt64(), r.isAtEnd || r.remaining == ProbeKey.macBytes else { return nil }
        let mac = r.readRest()
        self = first == Self.pongTag ? .pong(sequence: seq, sentAtMs: at, mac: mac)
                                     : .probe(sequence: seq, sentAtMs: at, active: first == Self.probeTag, mac: mac)
    }

    /// The tag and numbers a MAC covers.
    var macInput: [UInt8]? {
        var w = ByteWriter(capacity: 13)
        switch self {
        case .call: return nil
        case .probe(let seq, let at, let active, _):
            w.write(active ? Self.probeTag : Self.standbyProbeTag)
            w.write(seq)
            w.write(at)
        case .pong(let seq, let at, _):
            w.write(Self.pongTag)
            w.write(seq)
            w.write(at)
        }
        return w.bytes
    }
}

/// The key of a call's probes and pongs, from the call's end-to-end key agreement (the runtime derives it from both
/// directions' SRTP master keys): MACs are Keccak-256(key ‖ tag ‖ sequence ‖ sent-at) cut to 8 bytes.
public struct ProbeKey: Sendable, Equatable {
    static let macBytes = 8
    let bytes: [UInt8]

    /// The same key at both ends: the caller-to-callee material first.
    public init(callerToCallee: [UInt8], calleeToCaller: [UInt8]) {
        bytes = Keccak.hash256(Array("meshchain/v1/probe".utf8) + callerToCallee + calleeToCaller)
    }

    func mac(_ inner: ChainInner) -> [UInt8] {
        Array(Keccak.hash256(bytes + (inner.macInput ?? [])).prefix(Self.macBytes))
    }

    func verifies(_ inner: ChainInner) -> Bool {
        switch inner {
        case .probe(_, _, _, let m), .pong(_, _, let m): m == mac(inner)
        case .call: false
        }
    }
}
