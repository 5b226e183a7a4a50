import MeshIdentity
import MeshWire

public struct GossipConfig: Sendable {
    /// Routes travel this many hops from the node that hosts the wallet.
    public var radius: UInt8 = 2
    /// Nodes announce themselves too (wallet = origin = the node's address, signed by the node key), so every
    /// node knows its next hops toward the nodes this many links away: the chain set-up is routed by them
    /// (docs/routing.md). The relay hop limit.
    public var nodeRadius: UInt8 = 6
    /// How often each neighbour gets a digest of what it should have heard from us.
    public var digestIntervalMs: Int64 = 10_000
    /// A route not refreshed (by an update or a matching digest) for this long is dropped.
    public var routeHoldMs: Int64 = 35_000
    /// A metric change smaller than this share of the old one is not worth an update.
    public var metricChangeThreshold = 0.2
    /// Routes kept from one neighbour; more are refused (and counted), so one neighbour cannot exhaust memory.
    public var maxRoutesPerNeighbour = 1_000
    /// An origin signs its announcements to expire this long after signing, and signs a new one (next sequence)
    /// when half of that is left.
    public var announcementLifetimeMs: Int64 = 600_000
    /// Announcements expiring further ahead than the lifetime plus this are refused (clocks within a minute).
    public var maxClockSkewMs: Int64 = 60_000
    /// Signature checks per neighbour: a token bucket of this rate and depth. Entries beyond it wait (the
    /// neighbour is asked for its full table again once the bucket is full), so no neighbour can make this
    /// node spend more than `verificationsPerSecond` secp256k1 recoveries a second.
    public var verificationsPerSecond = 100.0
    public var verificationBurst = 100.0
    var verificationRate: TokenBucket.Rate { TokenBucket.Rate(perSecond: verificationsPerSecond, burst: verificationBurst) }
    /// Verified announcements remembered (until they expire), so a refresh or the same announcement from
    /// another neighbour costs no second signature check.
    public var maxVerified = 8_192
    public init() {}
}

/// Input gossip refused or held back, and the signature work done (`node-ctl gossip --json`).
public struct GossipCounters: Sendable, Codable, Equatable {
    /// Messages that failed to parse.
    public var malformed = 0
    /// Routes refused because their neighbour already had `maxRoutesPerNeighbour` of them here.
    public var refusedRoutes = 0
    /// Announcements whose signature is not the wallet's.
    public var forged = 0
    /// Announcements expired, or expiring implausibly far ahead.
    public var expired = 0
    /// Announcements older than the newest authentic sequence seen for the wallet (replays), or refuted.
    public var outdated = 0
    /// Entries left for later because the neighbour's signature-check budget was spent.
    public var deferred = 0
    /// Signature checks done (the verified cache answers the rest).
    public var verifications = 0
    /// Routes dropped because their home node, asked at call time, did not confirm it hosts the wallet.
    public var refuted = 0
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
    /// "wallet", or "node" for a node's own announcement (its reachability).
    public var kind: String
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
        /// The sender's full table number on the message that said it last (`GossipMessage.update`'s `table`).
        var table: UInt64
    }

    struct Neighbour {
        var cost: UInt16
        var learned: [WalletAddress: Learned] = [:] { didSet { learnedDigest = nil } }
        /// The digest of `learned`, kept until it changes: a digest message costs a comparison, not a hash of
        /// the whole table.
        var learnedDigest: [UInt8]?
        /// When the neighbour's digest last matched: that refreshes every route it told us.
        var digestMatchedAt: Int64 = .min
        /// What we last told this neighbour, per wallet (withdrawals removed once sent).
        var told: [WalletAddress: GossipEntry] = [:]
        var nextDigestAt: Int64
        /// Signature checks this neighbour may still cause.
        var budget: TokenBucket
        /// Entries were deferred for lack of tokens: ask for the full table again once the bucket is full.
        var owesFull = false
        /// The newest full table of the neighbour's seen, and which of its parts are in while some are missing.
        var table: IncomingTable?
    }

    /// A neighbour's newest full table: its number, its parts, and those that arrived (nil once all did).
    struct IncomingTable {
        let table: UInt64
        let count: UInt16
        var received: Set<UInt16>? = []
    }

    /// The newest authentic sequence seen for a wallet, kept until that announcement expires.
    struct Newest {
        var sequence: UInt32
        var expiresAtMs: Int64
    }

    /// A route its home node did not confirm: nothing from that origin up to that sequence is taken again.
    struct Refutation {
        var origin: WalletAddress
        var sequence: UInt32
        var untilMs: Int64
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
    /// The wallets hosted here: only these are announced, signed with their own keys.
    private let hosted: [WalletAddress: PrivateKey]
    private var neighbours: [WalletAddress: Neighbour] = [:]
    private var selected: [WalletAddress: Selected] = [:]
    private var feasibility: [WalletAddress: Feasibility] = [:]
    /// Announcements whose signature was checked, with their expiry.
    private var verified: [HostAnnouncement: Int64] = [:]
    private var newest: [WalletAddress: Newest] = [:]
    private var refutations: [WalletAddress: Refutation] = [:]
    public private(set) var counters = GossipCounters()
    /// Forgotten feasibility, expired cache entries and refutations are swept this often.
    static let pruneIntervalMs: Int64 = 1_000
    /// The wall clock: announcements' expiries are wall-clock time; `nowMs` is monotonic (the shell keeps it current).
    public var clock = WallClock()
    private var nextPruneAt: Int64 = 0
    /// The number of the last full table sent (`GossipMessage.TablePart`): from `sequence` × 2³², so the numbers
    /// of a restarted node's tables are above those of its earlier run.
    private var nextTable: UInt64

    /// `sequence` is where this node's own sequence numbers start; it must grow across restarts (docs/gossip.md).
    /// With `nodeKey` (whose address is `local`) the node also announces itself, for routing chains.
    public init(local: WalletAddress, hosted: [PrivateKey], nodeKey: PrivateKey? = nil, sequence: UInt32,
                config: GossipConfig = GossipConfig(), nowMs: Int64) {
        self.local = local
        self.config = config
        nextTable = UInt64(sequence) << 32
        let keys = hosted + (nodeKey.map { [$0] } ?? [])
        self.hosted = Dictionary(keys.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        for key in self.hosted.values { announce(key, sequence: sequence, nowMs: nowMs) }
    }

    /// Signs "this node hosts `key`'s wallet" at `sequence`, valid for the configured lifetime.
    private mutating func announce(_ key: PrivateKey, sequence: UInt32, nowMs: Int64) {
        let expires = UInt32(clamping: (clock.wall(nowMs) + config.announcementLifetimeMs) / 1000)
        let announcement = HostAnnouncement.sign(wallet: key, origin: local, sequence: sequence, expiresAtS: expires)
        selected[key.address] = Selected(entry: GossipEntry(announcement, hops: 0, metric: 0), via: nil, since: nowMs)
    }

    // MARK: inputs

    /// A link came up: tell the neighbour everything.
    public mutating func neighbourUp(_ node: WalletAddress, cost: UInt16, nowMs: Int64) -> [GossipAction] {
        neighbours[node] = Neighbour(cost: max(cost, 1), nextDigestAt: nowMs + config.digestIntervalMs,
                                     budget: TokenBucket(config.verificationRate, nowMs: nowMs))
        return fullTable(to: node)
    }

    /// A link went down: forget what it told us.
    public mutating func neighbourDown(_ node: WalletAddress, nowMs: Int64) -> [GossipAction] {
        guard let gone = neighbours.removeValue(forKey: node) else { return [] }
        return reselect(Set(gone.learned.keys), nowMs: nowMs)
    }

    /// The link's cost changed (RTT in ms with a loss penalty).
    public mutating func setCost(_ node: WalletAddress, cost: UInt16, nowMs: Int64) -> [GossipAction] {
        guard let learned = neighbours[node]?.learned.keys else { return [] }
        neighbours[node]?.cost = max(cost, 1)
        return reselect(Set(learned), nowMs: nowMs)
    }

    public mutating func receive(_ bytes: [UInt8], from node: WalletAddress, nowMs: Int64) -> [GossipAction] {
        guard neighbours[node] != nil else { return [] }
        guard let message = GossipMessage(parsing: bytes) else {
            counters.malformed += 1
            return []
        }
        switch message {
        case .update(let entries, let table):
            // Taken out while it changes, so its table is not copied.
            var neighbour = neighbours.removeValue(forKey: node)!
            learn(entries, table: table, from: &neighbour, nowMs: nowMs)
            neighbours[node] = neighbour
            return reselect(Set(entries.map(\.wallet)), nowMs: nowMs)
        case .tablePart(let entries, let part):
            // A part of a table older than the newest one seen, or of one already complete, says nothing new.
            if let newest = neighbours[node]?.table, part.table < newest.table || (part.table == newest.table && newest.received == nil) {
                return []
            }
            var neighbour = neighbours.removeValue(forKey: node)!
            if neighbour.table?.table != part.table || neighbour.table?.count != part.count {
                neighbour.table = IncomingTable(table: part.table, count: part.count)
            }
            neighbour.table?.received?.insert(part.index)
            learn(entries, table: part.table, from: &neighbour, nowMs: nowMs)
            var touched = Set(entries.map(\.wallet))
            if let table = neighbour.table, table.received?.count == Int(table.count) {
                // Complete: what the neighbour said before the table and not again in it (or since) is gone.
                let untold = neighbour.learned.filter { $0.value.table < table.table }.map(\.key)
                for wallet in untold { neighbour.learned[wallet] = nil }
                touched.formUnion(untold)
                neighbour.table?.received = nil
            }
            neighbours[node] = neighbour
            return reselect(touched, nowMs: nowMs)
        case .digest(let digest):
            var neighbour = neighbours.removeValue(forKey: node)!
            let ours = neighbour.learnedDigest ?? Self.digest(Array(neighbour.learned.values.map(\.entry)))
            neighbour.learnedDigest = ours
            if digest == ours { neighbour.digestMatchedAt = nowMs }
            neighbours[node] = neighbour
            return digest == ours ? [] : [.send(GossipMessage.requestFull.serialize(), to: node)]
        case .requestFull:
            return fullTable(to: node)
        }
    }

    /// Takes what a neighbour says of some wallets (routes and withdrawals) in a message sent after its full table
    /// number `table`.
    private mutating func learn(_ entries: [GossipEntry], table: UInt64, from neighbour: inout Neighbour, nowMs: Int64) {
        for entry in entries where entry.origin != local && hosted[entry.wallet] == nil {
            if entry.metric == GossipEntry.infinity {
                neighbour.learned[entry.wallet] = nil
            } else if neighbour.learned[entry.wallet] == nil && neighbour.learned.count >= config.maxRoutesPerNeighbour {
                counters.refusedRoutes += 1
            } else {
                switch accept(entry.announcement, from: &neighbour, nowMs: nowMs) {
                case .accepted:
                    neighbour.learned[entry.wallet] = Learned(entry: entry, refreshedAt: nowMs, table: table)
                case .refused:
                    // What the neighbour said before is superseded by what it says now, which we refuse.
                    neighbour.learned[entry.wallet] = nil
                case .deferred:
                    // Not judged yet (the neighbour's budget is spent; its full table is asked for later):
                    // what it said before stands until then, as said again now.
                    neighbour.learned[entry.wallet]?.table = table
                }
            }
        }
    }

    /// A call-time check found that `origin` does not host `wallet` (it said so, or did not answer): routes to
    /// the wallet through that origin are dropped and withdrawn, and its announcements up to the sequence
    /// seen are not taken again until they expire. A newer announcement (the wallet came back) is taken.
    public mutating func refute(_ wallet: WalletAddress, origin: WalletAddress, nowMs: Int64) -> [GossipAction] {
        guard let current = selected[wallet], current.via != nil, current.entry.origin == origin else { return [] }
        let announcement = current.entry.announcement
        refutations[wallet] = Refutation(origin: origin, sequence: announcement.sequence, untilMs: announcement.expiresAtMs)
        for node in neighbours.keys {
            if let learned = neighbours[node]?.learned[wallet]?.entry, refuted(learned.announcement) {
                neighbours[node]?.learned[wallet] = nil
            }
        }
        counters.refuted += 1
        return reselect([wallet], nowMs: nowMs)
    }

    /// Digests on schedule; routes that were not refreshed or whose announcement expired are dropped; hosted
    /// wallets are announced again (next sequence) when half their lifetime is gone.
    /// When `tick` next has something to do: a digest to a neighbour, an own announcement to renew, and at least
    /// every `pruneIntervalMs` the rest (routes past their hold or expiry, a full table owed once a neighbour's
    /// budget refilled, pruning), which is checked on that cadence rather than tracked entry by entry.
    public var nextDeadline: Int64 {
        var next = nextPruneAt
        for neighbour in neighbours.values { next = min(next, neighbour.nextDigestAt) }
        for wallet in hosted.keys {
            guard let own = selected[wallet]?.entry.announcement else { continue }
            next = min(next, clock.monotonic(own.expiresAtMs - config.announcementLifetimeMs / 2))
        }
        return next
    }

    public mutating func tick(nowMs: Int64) -> [GossipAction] {
        var actions: [GossipAction] = []
        var changed: Set<WalletAddress> = []
        let wallMs = clock.wall(nowMs)
        // Routes past their hold or expiry, and full tables owed, are looked at once every `pruneIntervalMs`.
        let sweep = nowMs >= nextPruneAt
        for node in neighbours.keys.sorted() {
            guard var neighbour = neighbours.removeValue(forKey: node) else { continue }
            let heardAt = neighbour.digestMatchedAt
            for (wallet, learned) in neighbour.learned where sweep
            && (nowMs - max(learned.refreshedAt, heardAt) >= config.routeHoldMs || wallMs >= learned.entry.announcement.expiresAtMs) {
                neighbour.learned[wallet] = nil
                changed.insert(wallet)
            }
            if nowMs >= neighbour.nextDigestAt {
                neighbour.nextDigestAt = nowMs + config.digestIntervalMs
                actions.append(.send(GossipMessage.digest(Self.digest(Array(neighbour.told.values))).serialize(), to: node))
            }
            if sweep, neighbour.owesFull, neighbour.budget.refill(config.verificationRate, nowMs: nowMs) >= config.verificationBurst {
                neighbour.owesFull = false
                actions.append(.send(GossipMessage.requestFull.serialize(), to: node))
            }
            neighbours[node] = neighbour
        }
        for key in hosted.values.sorted(by: { $0.address < $1.address }) {
            guard let own = selected[key.address]?.entry.announcement,
                  own.expiresAtMs - wallMs <= config.announcementLifetimeMs / 2 else { continue }
            announce(key, sequence: max(own.sequence &+ 1, UInt32(truncatingIfNeeded: wallMs / 1000)), nowMs: nowMs)
            changed.insert(key.address)
        }
        if sweep {
            nextPruneAt = nowMs + Self.pruneIntervalMs
            // A wallet whose feasibility is forgotten may now take a route that was infeasible.
            for (wallet, f) in feasibility where f.forgetAt.map({ nowMs >= $0 }) ?? false {
                feasibility[wallet] = nil
                changed.insert(wallet)
            }
            verified = verified.filter { wallMs < $0.value }
            newest = newest.filter { wallMs < $0.value.expiresAtMs }
            refutations = refutations.filter { wallMs < $0.value.untilMs }
        }
        if !changed.isEmpty { actions += reselect(changed, nowMs: nowMs) }
        return actions
    }

    // MARK: checking announcements

    /// Whether an announcement from a neighbour may be used: cheap checks first (expiry, replay of an older
    /// sequence, refuted), then the wallet's signature, once per announcement and within the neighbour's budget.
    private enum Judgement { case accepted, refused, deferred }

    private mutating func accept(_ a: HostAnnouncement, from neighbour: inout Neighbour, nowMs: Int64) -> Judgement {
        let wallMs = clock.wall(nowMs)
        guard a.expiresAtMs > wallMs, a.expiresAtMs <= wallMs + config.announcementLifetimeMs + config.maxClockSkewMs else {
            counters.expired += 1
            return .refused
        }
        if newest[a.wallet].map({ Self.newer($0.sequence, than: a.sequence) }) ?? false || refuted(a) {
            counters.outdated += 1
            return .refused
        }
        if verified[a] == nil {
            guard neighbour.budget.refill(config.verificationRate, nowMs: nowMs) >= 1 else {
                counters.deferred += 1
                neighbour.owesFull = true
                return .deferred
            }
            neighbour.budget.spend()
            counters.verifications += 1
            guard a.isAuthentic else {
                counters.forged += 1
                return .refused
            }
            if verified.count < config.maxVerified { verified[a] = a.expiresAtMs }
        }
        if newest[a.wallet].map({ Self.newer(a.sequence, than: $0.sequence) }) ?? (newest.count < config.maxVerified) {
            newest[a.wallet] = Newest(sequence: a.sequence, expiresAtMs: a.expiresAtMs)
        }
        return .accepted
    }

    private func refuted(_ a: HostAnnouncement) -> Bool {
        guard let r = refutations[a.wallet] else { return false }
        return r.origin == a.origin && !Self.newer(a.sequence, than: r.sequence)
    }

    // MARK: queries

    /// The best route to a wallet, if gossip knows one (for wallets this node hosts: itself).
    public func route(to wallet: WalletAddress) -> GossipEntry? { selected[wallet]?.entry }

    /// The neighbour a route goes through (nil for hosted wallets).
    public func nextHop(to wallet: WalletAddress) -> WalletAddress? { selected[wallet]?.via }

    /// How far an entry travels: a node's own announcement to `nodeRadius`, a wallet's to `radius`.
    private func radius(_ entry: GossipEntry) -> UInt8 { entry.wallet == entry.origin ? config.nodeRadius : config.radius }

    /// Every neighbour's route to `wallet` (a node address for node routes), with the links through it and the
    /// metric, best first: the choices a chain set-up has at this node (docs/routing.md). Unlike `route(to:)`
    /// this includes routes the feasibility condition keeps out of selection; the set-up's path check rules
    /// out loops instead.
    public func neighbourRoutes(to wallet: WalletAddress) -> [(via: WalletAddress, links: Int, metric: Int)] {
        neighbours.compactMap { node, neighbour in
            guard let learned = neighbour.learned[wallet]?.entry, learned.hops < radius(learned) else { return nil }
            return (node, Int(learned.hops) + 1, Int(learned.metric) + Int(neighbour.cost))
        }.sorted { ($0.metric, $0.links, $0.via) < ($1.metric, $1.links, $1.via) }
    }

    public func routes(nowMs: Int64) -> [GossipRoute] {
        selected.values.sorted { ($0.entry.hops, $0.entry.wallet) < ($1.entry.hops, $1.entry.wallet) }.map {
            GossipRoute(wallet: $0.entry.wallet.checksummed, origin: $0.entry.origin.checksummed,
                        via: $0.via?.checksummed ?? "self", hops: Int($0.entry.hops), metric: Int($0.entry.metric),
                        sequence: $0.entry.sequence, ageMs: nowMs - $0.since,
                        kind: $0.entry.wallet == $0.entry.origin ? "node" : "wallet")
        }
    }

    // MARK: route selection

    /// Chooses the best feasible route for each of `wallets` (those an event touched; each wallet's route
    /// depends only on what was said about it) and tells neighbours what changed.
    private mutating func reselect(_ wallets: Set<WalletAddress>, nowMs: Int64) -> [GossipAction] {
        for wallet in wallets where hosted[wallet] == nil {
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
        for wallet in wallets {
            guard let s = selected[wallet], s.entry.hops < radius(s.entry) else { continue }
            let f = feasibility[wallet]
            if f == nil || Self.newer(s.entry.sequence, than: f!.sequence) {
                feasibility[wallet] = Feasibility(sequence: s.entry.sequence, metric: s.entry.metric)
            } else if f!.sequence == s.entry.sequence {
                feasibility[wallet] = Feasibility(sequence: s.entry.sequence, metric: min(f!.metric, s.entry.metric))
            }
        }
        return announceChanges(wallets.sorted())
    }

    private func bestRoute(for wallet: WalletAddress) -> (entry: GossipEntry, via: WalletAddress)? {
        var best: (entry: GossipEntry, via: WalletAddress)?
        for (node, neighbour) in neighbours {
            guard let learned = neighbour.learned[wallet]?.entry, learned.hops < radius(learned) else { continue }
            // Babel's feasibility condition guards switching to another neighbour; the current next hop's
            // updates are always taken. Any transient loop dies out: each pass adds a hop and the radius caps hops.
            if selected[wallet]?.via != node, let f = feasibility[wallet] {
                let feasible = Self.newer(learned.sequence, than: f.sequence) || (learned.sequence == f.sequence && learned.metric < f.metric)
                guard feasible else { continue }
            }
            let metric = UInt16(min(Int(learned.metric) + Int(neighbour.cost), Int(GossipEntry.infinity) - 1))
            let candidate = GossipEntry(learned.announcement, hops: learned.hops + 1, metric: metric)
            if let b = best {
                let better = Self.newer(candidate.sequence, than: b.entry.sequence)
                    || (candidate.sequence == b.entry.sequence && (candidate.metric, node) < (b.entry.metric, b.via))
                if !better { continue }
            }
            best = (candidate, node)
        }
        return best
    }

    /// What each neighbour should hear now about `wallets`, compared with what it was told.
    private mutating func announceChanges(_ wallets: [WalletAddress]) -> [GossipAction] {
        var actions: [GossipAction] = []
        for node in neighbours.keys.sorted() {
            guard var neighbour = neighbours[node] else { continue }
            var changes: [GossipEntry] = []
            for wallet in wallets {
                switch (neighbour.told[wallet], advertised(wallet, to: node)) {
                case (nil, nil):
                    break
                case (nil, let entry?):
                    changes.append(entry)
                case (var withdrawal?, nil):
                    withdrawal.metric = GossipEntry.infinity
                    changes.append(withdrawal)
                case (let old?, let entry?):
                    let relative = abs(Double(entry.metric) - Double(old.metric)) / Double(max(old.metric, 1))
                    if old.announcement != entry.announcement || old.hops != entry.hops || relative > config.metricChangeThreshold {
                        changes.append(entry)
                    }
                }
            }
            for entry in changes {
                if entry.metric == GossipEntry.infinity { neighbour.told[entry.wallet] = nil } else { neighbour.told[entry.wallet] = entry }
            }
            neighbours[node] = neighbour
            actions += Self.parts(changes).map { .send(GossipMessage.update($0, table: nextTable).serialize(), to: node) }
        }
        return actions
    }

    /// Routes for `node`: our selected routes within the radius, minus those learned from it (split horizon).
    private func advertisement(for node: WalletAddress) -> [WalletAddress: GossipEntry] {
        var out: [WalletAddress: GossipEntry] = [:]
        for wallet in selected.keys { out[wallet] = advertised(wallet, to: node) }
        return out
    }

    private func advertised(_ wallet: WalletAddress, to node: WalletAddress) -> GossipEntry? {
        guard let s = selected[wallet], s.entry.hops < radius(s.entry), s.via != node else { return nil }
        return s.entry
    }

    private mutating func fullTable(to node: WalletAddress) -> [GossipAction] {
        guard neighbours[node] != nil else { return [] }
        let entries = advertisement(for: node)
        neighbours[node]?.told = entries
        let sorted = entries.values.sorted { $0.wallet < $1.wallet }
        nextTable &+= 1
        let parts = sorted.isEmpty ? [[]] : Self.parts(sorted)
        let count = UInt16(clamping: parts.count)
        return parts.prefix(Int(count)).enumerated().map { index, part in
            .send(GossipMessage.tablePart(part, .init(table: nextTable, index: UInt16(index), count: count)).serialize(), to: node)
        }
    }

    /// Entries in message-sized parts.
    private static func parts(_ entries: [GossipEntry]) -> [[GossipEntry]] {
        stride(from: 0, to: entries.count, by: GossipMessage.maxEntries).map { start in
            Array(entries[start..<min(start + GossipMessage.maxEntries, entries.count)])
        }
    }

    /// Order-independent digest of a set of entries.
    static func digest(_ entries: [GossipEntry]) -> [UInt8] {
        let sorted = entries.filter { $0.metric != GossipEntry.infinity }.sorted { $0.wallet < $1.wallet }
        var w = ByteWriter(capacity: sorted.count * GossipEntry.bytes)
        for e in sorted { GossipMessage.write(e, to: &w) }
        return Keccak.hash256(w.bytes)
    }

    /// Sequence numbers compare modulo 2^32 (RFC 1982 style).
    static func newer(_ a: UInt32, than b: UInt32) -> Bool { a != b && Int32(bitPattern: a &- b) > 0 }
}
