import MeshIdentity
import MeshWire

/// "`origin` hosts `wallet`", signed by the wallet's key at the origin (docs/gossip.md). Relays pass it on
/// unchanged, so a node can only be named the home of a wallet whose key signed that.
public struct HostAnnouncement: Sendable, Hashable {
    public var wallet: WalletAddress
    /// The node hosting the wallet (its node address).
    public var origin: WalletAddress
    /// The origin's sequence number for this wallet; a newer one replaces any older announcement.
    public var sequence: UInt32
    /// Unix seconds after which nobody may use or pass on the announcement.
    public var expiresAtS: UInt32
    public var signature: Signature

    static let label = Array("meshgossip/v1/host".utf8)
    static let signedBytes = 20 + 20 + 4 + 4
    static let bytes = signedBytes + Signature.byteCount

    public init(wallet: WalletAddress, origin: WalletAddress, sequence: UInt32, expiresAtS: UInt32, signature: Signature) {
        self.wallet = wallet
        self.origin = origin
        self.sequence = sequence
        self.expiresAtS = expiresAtS
        self.signature = signature
    }

    /// Signs an announcement with the wallet key (the same label-and-Keccak helper as presence records).
    public static func sign(wallet: PrivateKey, origin: WalletAddress, sequence: UInt32, expiresAtS: UInt32) -> HostAnnouncement {
        let body = signedPart(wallet: wallet.address, origin: origin, sequence: sequence, expiresAtS: expiresAtS)
        return HostAnnouncement(wallet: wallet.address, origin: origin, sequence: sequence, expiresAtS: expiresAtS,
                                signature: wallet.sign(label: label, body: body))
    }

    static func signedPart(wallet: WalletAddress, origin: WalletAddress, sequence: UInt32, expiresAtS: UInt32) -> [UInt8] {
        var w = ByteWriter(capacity: signedBytes)
        w.write(bytes: wallet.bytes)
        w.write(bytes: origin.bytes)
        w.write(sequence)
        w.write(expiresAtS)
        return w.bytes
    }

    /// True when the wallet's own key signed it (one secp256k1 recovery: the expensive check).
    public var isAuthentic: Bool {
        signature.signer(label: Self.label, body: Self.signedPart(wallet: wallet, origin: origin, sequence: sequence,
                                                                  expiresAtS: expiresAtS)) == wallet
    }

    public var expiresAtMs: Int64 { Int64(expiresAtS) * 1000 }
}

/// One advertised route: a signed host announcement plus what each hop adds (outside the signature, as in
/// Babel with signed origins): the hop count and the cost from the sender.
public struct GossipEntry: Sendable, Equatable, Hashable {
    public var announcement: HostAnnouncement
    /// Hops from the sender to the origin (0: the sender hosts it).
    public var hops: UInt8
    /// The sender's cost to reach the origin; `GossipEntry.infinity` withdraws the route.
    public var metric: UInt16

    public static let infinity: UInt16 = .max
    static let bytes = HostAnnouncement.bytes + 1 + 2

    public init(_ announcement: HostAnnouncement, hops: UInt8, metric: UInt16) {
        self.announcement = announcement
        self.hops = hops
        self.metric = metric
    }

    public var wallet: WalletAddress { announcement.wallet }
    public var origin: WalletAddress { announcement.origin }
    public var sequence: UInt32 { announcement.sequence }
}

/// Gossip messages between link neighbours (docs/gossip.md), carried as link application payloads.
public enum GossipMessage: Sendable, Equatable {
    /// Incremental routes, sent after the sender's full table number `table` (the last it sent to anyone).
    case update([GossipEntry], table: UInt64)
    /// One part of a full table: once every part of `table` is in, whatever the sender said before the table and
    /// did not say again in it is forgotten. Parts may come in any order, and updates sent after the table may
    /// overtake them.
    case tablePart([GossipEntry], TablePart)
    /// A digest of everything the sender currently advertises to the receiver.
    case digest([UInt8])
    /// "Send me everything": the digest did not match.
    case requestFull

    /// Which full table a part belongs to (the sender's number for it, growing) and where it is in it.
    public struct TablePart: Sendable, Equatable {
        public var table: UInt64
        public var index: UInt16
        public var count: UInt16
        public init(table: UInt64, index: UInt16, count: UInt16) {
            self.table = table
            self.index = index
            self.count = count
        }
    }

    enum Tag: UInt8 { case update = 1, digest = 2, requestFull = 3, tablePart = 4 }
    /// Entries per update message (116 bytes each), so one fits in a 1,280-byte datagram with the link's overhead.
    public static let maxEntries = 10

    public func serialize() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        switch self {
        case .update(let entries, let table):
            w.write(Tag.update.rawValue)
            w.write(table)
            Self.write(entries, to: &w)
        case .tablePart(let entries, let part):
            w.write(Tag.tablePart.rawValue)
            w.write(part.table)
            w.write(part.index)
            w.write(part.count)
            Self.write(entries, to: &w)
        case .digest(let digest):
            w.write(Tag.digest.rawValue)
            w.write(bytes: digest)
        case .requestFull:
            w.write(Tag.requestFull.rawValue)
        }
        return w.bytes
    }

    private static func write(_ entries: [GossipEntry], to w: inout ByteWriter) {
        precondition(entries.count <= Self.maxEntries, "split updates before serializing")
        w.write(UInt8(entries.count))
        for e in entries { write(e, to: &w) }
    }

    static func write(_ e: GossipEntry, to w: inout ByteWriter) {
        write(e.announcement, to: &w)
        w.write(e.hops)
        w.write(e.metric)
    }

    static func write(_ a: HostAnnouncement, to w: inout ByteWriter) {
        w.write(bytes: HostAnnouncement.signedPart(wallet: a.wallet, origin: a.origin, sequence: a.sequence, expiresAtS: a.expiresAtS))
        w.write(bytes: a.signature.bytes)
    }

    static func readAnnouncement(_ r: inout ByteReader) -> HostAnnouncement? {
        guard let wallet = r.readBytes(20).flatMap(WalletAddress.init(bytes:)),
              let origin = r.readBytes(20).flatMap(WalletAddress.init(bytes:)),
              let seq = r.readUInt32(), let expires = r.readUInt32(),
              let signature = r.readBytes(Signature.byteCount).flatMap(Signature.init(bytes:)) else { return nil }
        return HostAnnouncement(wallet: wallet, origin: origin, sequence: seq, expiresAtS: expires, signature: signature)
    }

    /// A count u8 (≤ `maxEntries`) and that many entries, to the end of the message.
    private static func readEntries(_ r: inout ByteReader) -> [GossipEntry]? {
        guard let count = r.readUInt8(), Int(count) <= maxEntries, r.remaining == Int(count) * GossipEntry.bytes else { return nil }
        var entries: [GossipEntry] = []
        for _ in 0..<count {
            guard let announcement = readAnnouncement(&r), let hops = r.readUInt8(), let metric = r.readUInt16() else { return nil }
            entries.append(GossipEntry(announcement, hops: hops, metric: metric))
        }
        return entries
    }

    public init?(parsing bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let tag = r.readUInt8().flatMap(Tag.init(rawValue:)) else { return nil }
        switch tag {
        case .update:
            guard let table = r.readUInt64(), let entries = Self.readEntries(&r) else { return nil }
            self = .update(entries, table: table)
        case .tablePart:
            guard let table = r.readUInt64(), let index = r.readUInt16(), let count = r.readUInt16(), index < count,
                  let entries = Self.readEntries(&r) else { return nil }
            self = .tablePart(entries, TablePart(table: table, index: index, count: count))
        case .digest:
            guard let digest = r.readBytes(32), r.isAtEnd else { return nil }
            self = .digest(digest)
        case .requestFull:
            guard r.isAtEnd else { return nil }
            self = .requestFull
        }
    }
}
