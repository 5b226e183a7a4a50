import MeshCall
import MeshIdentity
import MeshWire

/// Application messages carried inside link payloads; the first byte says which (docs/calls.md).
enum AppMessage: Equatable {
    /// "Do you host this wallet?" to every linked neighbour.
    case resolveRequest(query: UInt32, address: WalletAddress)
    case resolveReply(query: UInt32, address: WalletAddress, hosted: Bool)
    /// A gossip message (MeshRouting's format).
    case gossip([UInt8])
    /// A call signalling message (MeshCall's format).
    case call([UInt8])
    /// One SRTP packet of a call.
    case media(CallID, [UInt8])

    enum Tag: UInt8 {
        case resolveRequest = 0x01
        case resolveReply = 0x02
        case gossip = 0x03
        case call = 0x10
        case media = 0x20
    }

    /// Largest SRTP packet accepted: an Opus frame is at most 1275 bytes, plus RTP and SRTP overhead.
    static let maxMediaBytes = 1_400

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
        case .call(let body):
            w.write(Tag.call.rawValue)
            w.write(bytes: body)
        case .media(let id, let packet):
            w.write(Tag.media.rawValue)
            w.write(id.raw)
            w.write(bytes: packet)
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
        case .call:
            self = .call(r.readRest())
        case .media:
            guard let id = r.readUInt64(), r.remaining > 0, r.remaining <= Self.maxMediaBytes else { return nil }
            self = .media(CallID(raw: id), r.readRest())
        }
    }
}
