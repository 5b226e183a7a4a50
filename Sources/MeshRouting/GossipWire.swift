import MeshIdentity
import MeshWire

/// One advertised route: "`origin` hosts `wallet`", as seen by the sender of the message.
public struct GossipEntry: Sendable, Equatable, Hashable {
    public var wallet: WalletAddress
    /// The node hosting the wallet (its node address).
    public var origin: WalletAddress
    /// The origin's sequence number for this wallet; a newer one replaces any older route.
    public var sequence: UInt32
    /// Hops from the sender to the origin (0: the sender hosts it).
    public var hops: UInt8
    /// The sender's cost to reach the origin; `GossipEntry.infinity` withdraws the route.
    public var metric: UInt16

    public static let infinity: UInt16 = .max
    static let bytes = 20 + 20 + 4 + 1 + 2

    public init(wallet: WalletAddress, origin: WalletAddress, sequence: UInt32, hops: UInt8, metric: UInt16) {
        self.wallet = wallet
        self.origin = origin
        self.sequence = sequence
        self.hops = hops
        self.metric = metric
    }
}

/// Gossip messages between link neighbours (docs/gossip.md), carried as link application payloads.
public enum GossipMessage: Sendable, Equatable {
    /// Incremental routes; with `reset`, the first part of a full table: forget what the sender said before.
    case update([GossipEntry], reset: Bool)
    /// A digest of everything the sender currently advertises to the receiver.
    case digest([UInt8])
    /// "Send me everything": the digest did not match.
    case requestFull

    enum Tag: UInt8 { case update = 1, digest = 2, requestFull = 3, resetUpdate = 4 }
    /// Entries per update message, so one fits in a datagram with room to spare.
    public static let maxEntries = 20

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        switch self {
        case .update(let entries, let reset):
            precondition(entries.count <= Self.maxEntries, "split updates before serializing")
            w.write(reset ? Tag.resetUpdate.rawValue : Tag.update.rawValue)
            w.write(UInt8(entries.count))
            for e in entries {
                w.write(bytes: e.wallet.bytes)
                w.write(bytes: e.origin.bytes)
                w.write(e.sequence)
                w.write(e.hops)
                w.write(e.metric)
            }
        case .digest(let digest):
            w.write(Tag.digest.rawValue)
            w.write(bytes: digest)
        case .requestFull:
            w.write(Tag.requestFull.rawValue)
        }
        return w.bytes
    }

    public init?(parsing bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let tag = r.readUInt8().flatMap(Tag.init(rawValue:)) else { return nil }
        switch tag {
        case .update, .resetUpdate:
            guard let count = r.readUInt8(), Int(count) <= Self.maxEntries, r.remaining == Int(count) * GossipEntry.bytes else {
                return nil
            }
            var entries: [GossipEntry] = []
            for _ in 0..<count {
                guard let wallet = r.readBytes(20).flatMap(WalletAddress.init(bytes:)),
                      let origin = r.readBytes(20).flatMap(WalletAddress.init(bytes:)),
                      let seq = r.readUInt32(), let hops = r.readUInt8(), let metric = r.readUInt16() else { return nil }
                entries.append(GossipEntry(wallet: wallet, origin: origin, sequence: seq, hops: hops, metric: metric))
            }
            self = .update(entries, reset: tag == .resetUpdate)
        case .digest:
            guard let digest = r.readBytes(32), r.isAtEnd else { return nil }
            self = .digest(digest)
        case .requestFull:
            guard r.isAtEnd else { return nil }
            self = .requestFull
        }
    }
}
