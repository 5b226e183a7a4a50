import MeshCall
import MeshIdentity
import MeshWire

/// Application messages carried inside link payloads; the first byte says which (docs/calls.md). The forwarding
/// layer's messages (0x30–0x38, MeshRouting's `ChainMessage`) share the tag space.
enum AppMessage: Equatable {
    /// "Do you host this wallet?" to every linked neighbour.
    case resolveRequest(query: UInt32, address: WalletAddress)
    case resolveReply(query: UInt32, address: WalletAddress, hosted: Bool)
    /// A gossip message (MeshRouting's format).
    case gossip([UInt8])

    enum Tag: UInt8 {
        case resolveRequest = 0x01
        case resolveReply = 0x02
        case gossip = 0x03
    }

    func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        switch self {
        case .resolveRequest(let query, let address):
            w.write(Tag.resolveRequest.rawValue)
            w.write(query)
            w.write(bytes: address.bytes)
        case .resolveReply(let query, let address, let hosted):
            w.write(Tag.resolveReply.rawValue)
            w.write(query)
            w.write(bytes: address.bytes)
            w.write(UInt8(hosted ? 1 : 0))
        case .gossip(let body):
            w.write(Tag.gossip.rawValue)
            w.write(bytes: body)
        }
        return w.bytes
    }

    init?(parsing bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let tag = r.readUInt8().flatMap(Tag.init(rawValue:)) else { return nil }
        switch tag {
        case .resolveRequest:
            guard let q = r.readUInt32(), let a = r.readBytes(20).flatMap(WalletAddress.init(bytes:)), r.isAtEnd else { return nil }
            self = .resolveRequest(query: q, address: a)
        case .resolveReply:
            guard let q = r.readUInt32(), let a = r.readBytes(20).flatMap(WalletAddress.init(bytes:)),
                  let h = r.readUInt8(), h <= 1, r.isAtEnd else { return nil }
            self = .resolveReply(query: q, address: a, hosted: h == 1)
        case .gossip:
            self = .gossip(r.readRest())
        }
    }
}

/// What the two ends of a call send each other through its chain (inside the forwarding layer's data messages,
/// which relays pass on unread): signalling and SRTP packets.
enum CallInner: Equatable {
    /// A call signalling message (MeshCall's format).
    case signal([UInt8])
    /// One SRTP packet.
    case media([UInt8])

    static let signalTag: UInt8 = 0x10
    static let mediaTag: UInt8 = 0x20
    /// Largest SRTP packet accepted: an Opus frame is at most 1275 bytes, plus RTP and SRTP overhead.
    static let maxMediaBytes = 1_400

    func serialize() -> [UInt8] {
        switch self {
        case .signal(let body): [Self.signalTag] + body
        case .media(let packet): [Self.mediaTag] + packet
        }
    }

    init?(parsing bytes: [UInt8]) {
        guard let tag = bytes.first, bytes.count > 1 else { return nil }
        switch tag {
        case Self.signalTag: self = .signal(Array(bytes.dropFirst()))
        case Self.mediaTag where bytes.count - 1 <= Self.maxMediaBytes: self = .media(Array(bytes.dropFirst()))
        default: return nil
        }
    }
}
