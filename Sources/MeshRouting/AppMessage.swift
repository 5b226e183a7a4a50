import MeshIdentity
import MeshWire

/// Application messages carried inside link payloads; the first byte says which (docs/calls.md). The forwarding
/// layer's messages (0x30–0x38, MeshRouting's `ChainMessage`) share the tag space.
public enum AppMessage: Equatable, Sendable {
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

    public func serialize() -> [UInt8] {
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

    public init?(parsing bytes: [UInt8]) {
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
