import MeshIdentity
import MeshWire

/// What the two ends of a call send each other through its chain (inside the forwarding layer's data messages,
/// which relays pass on unread): signalling and SRTP packets.
public enum CallInner: Equatable, Sendable {
    /// A call signalling message (MeshCall's format).
    case signal([UInt8])
    /// One SRTP packet.
    case media([UInt8])
    /// ICE signalling for the call's direct path, sealed with `IceKey` (`IceSignal`).
    case ice([UInt8])
    /// Call control between the ends (`ControlEnvelope`), sealed with the call's control key.
    case control([UInt8])
    /// A node on the path quelches or unquelches the caller (`QuelchNotice`, signed by that node).
    case quelch([UInt8])
    /// A relay's quality verdict on the call (`QualityVerdict`, signed by that relay).
    case verdict([UInt8])

    public static let signalTag: UInt8 = 0x10
    public static let mediaTag: UInt8 = 0x20
    public static let iceTag: UInt8 = 0x30
    public static let controlTag: UInt8 = 0x40
    public static let quelchTag: UInt8 = 0x41
    public static let verdictTag: UInt8 = 0x42
    /// Largest SRTP packet accepted: an Opus frame is at most 1275 bytes, plus RTP and SRTP overhead.
    public static let maxMediaBytes = 1_400

    public func serialize() -> [UInt8] {
        switch self {
        case .signal(let body): [Self.signalTag] + body
        case .media(let packet): [Self.mediaTag] + packet
        case .ice(let sealed): [Self.iceTag] + sealed
        case .control(let sealed): [Self.controlTag] + sealed
        case .quelch(let notice): [Self.quelchTag] + notice
        case .verdict(let verdict): [Self.verdictTag] + verdict
        }
    }

    public init?(parsing bytes: [UInt8]) {
        guard let tag = bytes.first, bytes.count > 1 else { return nil }
        switch tag {
        case Self.signalTag: self = .signal(Array(bytes.dropFirst()))
        case Self.mediaTag where bytes.count - 1 <= Self.maxMediaBytes: self = .media(Array(bytes.dropFirst()))
        case Self.iceTag: self = .ice(Array(bytes.dropFirst()))
        case Self.controlTag: self = .control(Array(bytes.dropFirst()))
        case Self.quelchTag: self = .quelch(Array(bytes.dropFirst()))
        case Self.verdictTag: self = .verdict(Array(bytes.dropFirst()))
        default: return nil
        }
    }
}

/// One ICE signalling message between the two ends of a call (docs/calls.md, "Direct paths"): the sender's side,
/// the attempt it belongs to (each new pair of agents is a new generation; messages of older ones are ignored),
/// and what it says.
public struct IceSignal: Equatable, Sendable {
    public enum Body: Equatable, Sendable {
        /// The sender's ICE username fragment and password; sent once per generation, first.
        case credentials(ufrag: String, password: String)
        /// One local candidate in SDP form.
        case candidate(String)
        case endOfCandidates
        /// The sender has gone back to the chain (its direct path died or never came): the receiver does too.
        case fallback
    }

    public var fromCaller: Bool
    public var generation: UInt32
    public var body: Body

    public init(fromCaller: Bool, generation: UInt32, body: Body) {
        self.fromCaller = fromCaller
        self.generation = generation
        self.body = body
    }

    enum Kind: UInt8 {
        case credentials = 1, candidate, endOfCandidates, fallback
    }

    /// Longest candidate line accepted (libnice's are under 150 bytes).
    public static let maxCandidateBytes = 512
}

/// The key ICE signalling of one call is authenticated with (an `EndToEndKey`): only the call's two ends hold it, so
/// relays on the chain can neither forge nor alter a candidate (which would steer media to an address of their
/// choice) nor fake a fallback. The same idea as the chain's `ProbeKey`, with its own label.
public struct IceKey: Sendable {
    public let key: EndToEndKey
    /// The direct path's keepalives are sealed with a key of their own (`DirectPath.keepalive`).
    public let keepaliveKey: EndToEndKey

    /// A direct path's keepalive begins with these bytes: not RTP (whose first byte is 0x80–0xBF), so the receiver
    /// tells it from media.
    public static let keepaliveMagic: [UInt8] = Array("meshka".utf8)

    public init(callerToCallee: [UInt8], calleeToCaller: [UInt8]) {
        key = EndToEndKey(label: "meshcall/v1/ice", tag: CallInner.iceTag, callerToCallee: callerToCallee, calleeToCaller: calleeToCaller)
        keepaliveKey = EndToEndKey(label: "meshcall/v1/keepalive", tag: IceKey.keepaliveMagic[0], callerToCallee: callerToCallee,
                                   calleeToCaller: calleeToCaller)
    }

    /// The message as it goes after the 0x30 tag: side u8 (0 caller, 1 callee), generation u32, kind u8, body,
    /// then the first 16 bytes of Keccak-256(key ‖ 0x30 ‖ everything before the MAC).
    public func seal(_ signal: IceSignal) -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.write(UInt8(signal.fromCaller ? 0 : 1))
        w.write(signal.generation)
        switch signal.body {
        case .credentials(let ufrag, let password):
            w.write(IceSignal.Kind.credentials.rawValue)
            for text in [ufrag, password] {
                let bytes = Array(text.utf8.prefix(255))
                w.write(UInt8(bytes.count))
                w.write(bytes: bytes)
            }
        case .candidate(let line):
            w.write(IceSignal.Kind.candidate.rawValue)
            w.write(bytes: Array(line.utf8.prefix(IceSignal.maxCandidateBytes)))
        case .endOfCandidates:
            w.write(IceSignal.Kind.endOfCandidates.rawValue)
        case .fallback:
            w.write(IceSignal.Kind.fallback.rawValue)
        }
        return key.seal(w.bytes)
    }

    /// The message, or nil when it is malformed or its MAC is wrong.
    public func open(_ sealed: [UInt8]) -> IceSignal? {
        guard let content = key.open(sealed) else { return nil }
        var r = ByteReader(content)
        guard let side = r.readUInt8(), side <= 1, let generation = r.readUInt32(),
              let kind = r.readUInt8().flatMap(IceSignal.Kind.init(rawValue:)) else { return nil }
        let body: IceSignal.Body
        switch kind {
        case .credentials:
            guard let ufragCount = r.readUInt8(), let ufrag = r.readBytes(Int(ufragCount)),
                  let passwordCount = r.readUInt8(), let password = r.readBytes(Int(passwordCount)), r.isAtEnd else { return nil }
            body = .credentials(ufrag: String(decoding: ufrag, as: UTF8.self), password: String(decoding: password, as: UTF8.self))
        case .candidate:
            let line = r.readRest()
            guard !line.isEmpty, line.count <= IceSignal.maxCandidateBytes else { return nil }
            body = .candidate(String(decoding: line, as: UTF8.self))
        case .endOfCandidates, .fallback:
            guard r.isAtEnd else { return nil }
            body = kind == .fallback ? .fallback : .endOfCandidates
        }
        return IceSignal(fromCaller: side == 0, generation: generation, body: body)
    }
}

/// The key a call's control messages are sealed with (docs/calls.md, "Call control"): only the two ends hold it.
public func controlKey(_ keys: SRTPKeys, caller: Bool) -> EndToEndKey {
    EndToEndKey(label: "meshcall/v1/control", tag: CallInner.controlTag, callerToCallee: caller ? keys.send : keys.receive,
                calleeToCaller: caller ? keys.receive : keys.send)
}
