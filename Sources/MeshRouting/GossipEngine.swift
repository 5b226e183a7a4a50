import MeshIdentity
import MeshWire

public struct GossipConfig: Sendable {
    /// Routes travel this many hops from the node that hosts the wallet.
    public var radius: UInt8 = 2
    /// How often each neighbour gets a digest of what it should have heard from us.
    public var digestIntervalMs: Int64 = 10_000
    /// A route not refreshed (by an update or a matching digest) for this long is dropped.
    public var routeHoldMs: Int64 = 35_000
    /// A metric change smaller than this share of the old one is not worth an update.
    public var metricChangeThreshold = 0.2
    /// Routes kept from one neighbour; more are refused (and counted), so one neighbour cannot exhaust memory.
    public var maxRoutesPerNeighbour = 1_000
    public init() {}
}

/// The route this node uses to reach a wallet, as `node-ctl gossip` shows it.
public struct GossipRoute: Sendable, Equatable, Codable {
    public var wallet: String
    public var origin: String
    /// The neighbour the route was learned from ("self" for wallets this node hosts).
    public var via: String
    public var hops: Int
    public var metric: Int
    public var sequence: UInt32
    public var ageMs: Int64
}

public enum GossipAction: Sendable, Equatable {
    /// A gossip message for the link neighbour `to`.
    case send([UInt8], to: WalletAddress)
}

/// Distance-vector gossip of hosted wallets between link neighbours, Babel-style (docs/gossip.md):
/// sequence numbers from the origin, metrics from link costs, a feasibility condition and split horizon
/// against loops, incremental updates plus periodic digests, withdrawals. Pure: `now` comes in.
public struct GossipEngine: Sendable {
    struct Learned {
        var entry: GossipEntry
        var refreshedAt: Int64
    }

    struct Neighbour {
        var cost: UInt16
        var learned: [WalletAddress: Learned] = [:]
        /// What we last told this neighbour, per wallet (withdrawals removed once sent).
        var told: [WalletAddress: GossipEntry] = [:]
        var nextDigestAt: Int64
    }

    struct Selected {
        var entry: GossipEntry
        var via: WalletAddress?
        var since: Int64
    }

    struct Feasibility {
        var sequence: UInt32
        var metric: UInt16
        var forgetAt: Int64?
    }

    public let local: WalletAddress
    public let config: GossipConfig
    private var hosted: Set<WalletAddress>
    private var neighbours: [WalletAddress: Neighbour] = [:]
    private var selected: [WalletAddress: Selected] = [:]
    private var feasibility: [WalletAddress: Feasibility] = [:]
    /// Gossip messages that failed to parse.
    public private(set) var malformed = 0
    /// Routes refused because their neighbour already had `maxRoutesPerNeighbour` of them here.
    public private(set) var refusedRoutes = 0

    /// `sequence` is where this node's own sequence numbers start; it must grow across restarts (docs/gossip.md).
    public init(local: WalletAddress, hosted: [WalletAddress], sequence: UInt32, config: GossipConfig = GossipConfig(), nowMs: Int64) {
        self.local = local
        self.config = config
        self.hosted = Set(hosted)
        for wallet in hosted {
            selected[wallet] = Selected(entry: GossipEntry(wallet: wallet, origin: local, sequence: sequence, hops: 0, metric: 0),
                                        via: nil, since: nowMs)
        }
    }

    // MARK: inputs

    /// A link came up: tell the neighbour everything.
    public mutating func neighbourUp(_ node: WalletAddress, cost: UInt16, nowMs: Int64) -> [GossipAction] {
        neighbours[node] = Neighbour(cost: max(cost, 1), nextDigestAt: nowMs + config.digestIntervalMs)
        return fullTable(to: node)
    }

    /// A link went down: forget what it told us.
    public mutating func neighbourDown(_ node: WalletAddress, nowMs: Int64) -> [GossipAction] {
        guard neighbours.removeValue(forKey: node) != nil else { return [] }
        return reselect(nowMs: nowMs)
    }

    /// The link's cost changed (RTT in ms with a loss penalty).
    public mutating func setCost(_ node: WalletAddress, cost: UInt16, nowMs: Int64) -> [GossipAction] {
        guard neighbours[node] != nil else { return [] }
        neighbours[node]?.cost = max(cost, 1)
        return reselect(nowMs: nowMs)
    }

    public mutating func receive(_ bytes: [UInt8], from node: WalletAddress, nowMs: Int64) -> [GossipAction] {
        guard var neighbour = neighbours[node] else { return [] }
        guard let message = GossipMessage(parsing: bytes) else {
            malformed += 1
            return []
        }
        switch message {
        case .update(let entries, let reset):
            if reset { neighbour.learned = [:] }
            for entry in entries where entry.origin != local && !hosted.contains(entry.wallet) {
                if entry.metric == GossipEntry.infinity {
                    neighbour.learned[entry.wallet] = nil
                } else if neighbour.learned[entry.wallet] != nil || neighbour.learned.count < config.maxRoutesPerNeighbour {
                    neighbour.learned[entry.wallet] = Learned(entry: entry, refreshedAt: nowMs)
                } else {
                    refusedRoutes += 1
                }
            }
            neighbours[node] = neighbour
            return reselect(nowMs: nowMs)
        case .digest(let digest):
            guard digest == Self.digest(Array(neighbour.learned.values.map(\.entry))) else {
                return [.send(GossipMessage.requestFull.serialize(), to: node)]
            }
            for wallet in neighbour.learned.keys { neighbour.learned[wallet]?.refreshedAt = nowMs }
            neighbours[node] = neighbour
            return []
        case .requestFull:
            return fullTable(to: node)
        }
    }

    /// Digests on schedule; routes that were not refreshed expire.
    public mutating func tick(nowMs: Int64) -> [GossipAction] {
        var actions: [GossipAction] = []
        var expired = false
        for node in neighbours.keys.sorted() {
            guard var neighbour = neighbours[node] else { continue }
            let before = neighbour.learned.count
            neighbour.learned = neighbour.learned.filter { nowMs - $0.value.refreshedAt < config.routeHoldMs }
            expired = expired || neighbour.learned.count != before
            if nowMs >= neighbour.nextDigestAt {
                neighbour.nextDigestAt = nowMs + config.digestIntervalMs
                actions.append(.send(GossipMessage.digest(Self.digest(Array(neighbour.told.values))).serialize(), to: node))
            }
            neighbours[node] = neighbour
        }
        feasibility = feasibility.filter { $0.value.forgetAt.map { nowMs < $0 } ?? true }
        if expired { actions += reselect(nowMs: nowMs) }
        return actions
    }

    // MARK: queries

    /// The best route to a wallet, if gossip knows one (for wallets this node hosts: itself).
    public func route(to wallet: WalletAddress) -> GossipEntry? { selected[wallet]?.entry }

    /// The neighbour a route goes through (nil for hosted wallets).
    public func nextHop(to wallet: WalletAddress) -> WalletAddress? { selected[wallet]?.via }

    public func routes(nowMs: Int64) -> [GossipRoute] {
        selected.values.sorted { ($0.entry.hops, $0.entry.wallet) < ($1.entry.hops, $1.entry.wallet) }.map {
            GossipRoute(wallet: $0.entry.wallet.checksummed, origin: $0.entry.origin.checksummed,
                        via: $0.via?.checksummed ?? "self", hops: Int($0.entry.hops), metric: Int($0.entry.metric),
                        sequence: $0.entry.sequence, ageMs: nowMs - $0.since)
        }
    }

    // MARK: route selection

    /// Chooses the best feasible route per wallet and tells neighbours what changed.
    private mutating func reselect(nowMs: Int64) -> [GossipAction] {
        var wallets = Set(selected.keys)
        for neighbour in neighbours.values { wallets.formUnion(neighbour.learned.keys) }
        for wallet in wallets where !hosted.contains(wallet) {
            let best = bestRoute(for: wallet)
            switch (selected[wallet], best) {
            case (nil, nil):
                break
            case (.some, nil):
                selected[wallet] = nil
                feasibility[wallet]?.forgetAt = nowMs + config.routeHoldMs
            case (let old, .some(let new)):
                if old?.entry != new.entry || old?.via != new.via {
                    selected[wallet] = Selected(entry: new.entry, via: new.via, since: old?.via == new.via ? old!.since : nowMs)
                }
            }
        }
        for (wallet, s) in selected where s.entry.hops < config.radius {
            let f = feasibility[wallet]
            if f == nil || Self.newer(s.entry.sequence, than: f!.sequence) {
                feasibility[wallet] = Feasibility(sequence: s.entry.sequence, metric: s.entry.metric)
            } else if f!.sequence == s.entry.sequence {
                feasibility[wallet] = Feasibility(sequence: s.entry.sequence, metric: min(f!.metric, s.entry.metric))
            }
        }
        return announceChanges()
    }

    private func bestRoute(for wallet: WalletAddress) -> (entry: GossipEntry, via: WalletAddress)? {
        var best: (entry: GossipEntry, via: WalletAddress)?
        for (node, neighbour) in neighbours {
            guard let learned = neighbour.learned[wallet]?.entry, learned.hops < config.radius else { continue }
            // Babel's feasibility condition guards switching to another neighbour; the current next hop's
            // updates are always taken. Any transient loop dies out: each pass adds a hop and the radius caps hops.
            if selected[wallet]?.via != node, let f = feasibility[wallet] {
                let feasible = Self.newer(learned.sequence, than: f.sequence) || (learned.sequence == f.sequence && learned.metric < f.metric)
                guard feasible else { continue }
            }
            let metric = UInt16(min(Int(learned.metric) + Int(neighbour.cost), Int(GossipEntry.infinity) - 1))
            let candidate = GossipEntry(wallet: wallet, origin: learned.origin, sequence: learned.sequence,
                                        hops: learned.hops + 1, metric: metric)
            if let b = best {
                let better = Self.newer(candidate.sequence, than: b.entry.sequence)
                    || (candidate.sequence == b.entry.sequence && (candidate.metric, node) < (b.entry.metric, b.via))
                if !better { continue }
            }
            best = (candidate, node)
        }
        return best
    }

    /// What each neighbour should hear now, compared with what it was told.
    private mutating func announceChanges() -> [GossipAction] {
        var actions: [GossipAction] = []
        for node in neighbours.keys.sorted() {
            guard var neighbour = neighbours[node] else { continue }
            let wanted = advertisement(for: node)
            var changes: [GossipEntry] = []
            for (wallet, entry) in wanted.sorted(by: { $0.key < $1.key }) {
                guard let old = neighbour.told[wallet] else {
                    changes.append(entry)
                    continue
                }
                let relative = abs(Double(entry.metric) - Double(old.metric)) / Double(max(old.metric, 1))
                if old.origin != entry.origin || old.sequence != entry.sequence || old.hops != entry.hops
                    || relative > config.metricChangeThreshold {
                    changes.append(entry)
                }
            }
            for wallet in neighbour.told.keys.sorted() where wanted[wallet] == nil {
                var withdrawal = neighbour.told[wallet]!
                withdrawal.metric = GossipEntry.infinity
                changes.append(withdrawal)
            }
            for entry in changes {
                if entry.metric == GossipEntry.infinity { neighbour.told[entry.wallet] = nil } else { neighbour.told[entry.wallet] = entry }
            }
            neighbours[node] = neighbour
            actions += Self.chunks(changes, reset: false).map { .send($0, to: node) }
        }
        return actions
    }

    /// Routes for `node`: our selected routes within the radius, minus those learned from it (split horizon).
    private func advertisement(for node: WalletAddress) -> [WalletAddress: GossipEntry] {
        var out: [WalletAddress: GossipEntry] = [:]
        for (wallet, s) in selected where s.entry.hops < config.radius && s.via != node {
            out[wallet] = s.entry
        }
        return out
    }

    private mutating func fullTable(to node: WalletAddress) -> [GossipAction] {
        guard neighbours[node] != nil else { return [] }
        let entries = advertisement(for: node)
        neighbours[node]?.told = entries
        let sorted = entries.values.sorted { $0.wallet < $1.wallet }
        return Self.chunks(sorted, reset: true).map { .send($0, to: node) }
    }

    private static func chunks(_ entries: [GossipEntry], reset: Bool) -> [[UInt8]] {
        if entries.isEmpty { return reset ? [GossipMessage.update([], reset: true).serialize()] : [] }
        return stride(from: 0, to: entries.count, by: GossipMessage.maxEntries).map { start in
            let part = Array(entries[start..<min(start + GossipMessage.maxEntries, entries.count)])
            return GossipMessage.update(part, reset: reset && start == 0).serialize()
        }
    }

    /// Order-independent digest of a set of entries.
    static func digest(_ entries: [GossipEntry]) -> [UInt8] {
        let sorted = entries.filter { $0.metric != GossipEntry.infinity }.sorted { $0.wallet < $1.wallet }
        var w = ByteWriter(capacity: sorted.count * GossipEntry.bytes)
        for e in sorted { w.write(bytes: GossipMessage.update([e], reset: false).serialize()) }
        return Keccak.hash256(w.bytes)
    }

    /// Sequence numbers compare modulo 2^32 (RFC 1982 style).
    static func newer(_ a: UInt32, than b: UInt32) -> Bool { a != b && Int32(bitPattern: a &- b) > 0 }
}
