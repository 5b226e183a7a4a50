import MeshIdentity
@testable import MeshRouting
import Testing

/// Host announcements are signed by the wallet at its origin: forgeries, tampered relays, replays and expired
/// entries are refused and never passed on; signature work is cached and bounded per neighbour.
@Suite struct SignedGossipTests {
    /// A line: node 0 hosts Bob (wallet 0), node 1 is the victim, node 2 is downstream of it. An attacker
    /// (not in the net) links to node 1.
    struct Setup {
        var net = GossipNet(count: 3)
        let attacker = PrivateKey()
        var bob: WalletAddress { net.wallets[0] }
        var bobsAnnouncement: HostAnnouncement { net.nodes[0].route(to: bob)!.announcement }

        init() {
            net.link(0, 1)
            net.link(1, 2)
            _ = net.nodes[1].neighbourUp(attacker.address, cost: 1, nowMs: net.now)
        }

        /// The attacker's update reaches node 1; node 1's reactions go on through the net (none to the attacker).
        mutating func attack(_ entries: [GossipEntry]) {
            let actions = net.nodes[1].receive(GossipMessage.update(entries, table: 0).serialize(),
                                               from: attacker.address, nowMs: net.now)
            net.deliver(actions, from: 1)
        }

        /// Bob still resolves to his real home on the victim and downstream.
        func bobIsWhereHeIs() -> Bool {
            net.nodes[1].route(to: bob)?.origin == net.addresses[0] && net.nodes[2].route(to: bob)?.origin == net.addresses[0]
        }
    }

    @Test func announcementForAWalletTheAnnouncerCannotSignIsRefusedAndNotRelayed() {
        var s = Setup()
        #expect(s.bobIsWhereHeIs())
        // "I host Bob", far newer: signed with the attacker's own key, since it does not hold Bob's.
        var forged = HostAnnouncement.sign(wallet: s.attacker, origin: s.attacker.address,
                                           sequence: s.bobsAnnouncement.sequence + 1_000, expiresAtS: 600)
        forged.wallet = s.bob
        let before = s.net.messages
        s.attack([GossipEntry(forged, hops: 0, metric: 0)])
        #expect(s.net.nodes[1].counters.forged == 1)
        #expect(s.bobIsWhereHeIs())
        #expect(s.net.messages == before, "nothing was passed on")
        #expect(s.net.nodes[1].route(to: s.bob)?.sequence == s.bobsAnnouncement.sequence)
    }

    @Test func relayedEntryWithTamperedSequenceOrHomeIsRefused() {
        var s = Setup()
        var newerSequence = s.bobsAnnouncement
        newerSequence.sequence += 1_000
        var otherHome = s.bobsAnnouncement
        otherHome.origin = s.attacker.address
        otherHome.sequence += 1
        var laterExpiry = s.bobsAnnouncement
        laterExpiry.expiresAtS += 30
        for tampered in [newerSequence, otherHome, laterExpiry] {
            s.attack([GossipEntry(tampered, hops: 0, metric: 0)])
            #expect(s.bobIsWhereHeIs())
        }
        #expect(s.net.nodes[1].counters.forged == 3)
        // Hops and cost are not signed (each hop adds its own): the genuine announcement with a better metric is
        // a valid route, and still leads to Bob's real home.
        s.attack([GossipEntry(s.bobsAnnouncement, hops: 0, metric: 0)])
        #expect(s.net.nodes[1].counters.forged == 3)
        #expect(s.bobIsWhereHeIs())
    }

    @Test func replaysOfOlderSequencesAreIgnored() {
        var s = Setup()
        let bobKey = s.net.walletKeys[0]
        // Bob moved to a new home (sequence 5); the attacker replays his older, genuine announcement (sequence 1,
        // not yet expired) from the old home.
        let newHome = PrivateKey().address
        let moved = GossipEntry(HostAnnouncement.sign(wallet: bobKey, origin: newHome, sequence: 5, expiresAtS: 600),
                                hops: 0, metric: 0)
        _ = s.net.nodes[1].neighbourUp(newHome, cost: 50, nowMs: s.net.now)
        _ = s.net.nodes[1].receive(GossipMessage.update([moved], table: 0).serialize(), from: newHome, nowMs: s.net.now)
        #expect(s.net.nodes[1].route(to: s.bob)?.sequence == 5)
        let old = GossipEntry(HostAnnouncement.sign(wallet: bobKey, origin: s.net.addresses[0], sequence: 1, expiresAtS: 600),
                              hops: 0, metric: 0)
        s.attack([old])
        #expect(s.net.nodes[1].counters.outdated == 1)
        #expect(s.net.nodes[1].route(to: s.bob)?.sequence == 5)
        #expect(s.net.nodes[1].nextHop(to: s.bob) == newHome)
    }

    @Test func expiredAnnouncementsAreRefusedAndDroppedWhenTheyExpire() {
        var s = Setup()
        let bobKey = s.net.walletKeys[0]
        let stale = HostAnnouncement.sign(wallet: bobKey, origin: s.attacker.address, sequence: 900, expiresAtS: 0)
        let tooFar = HostAnnouncement.sign(wallet: bobKey, origin: s.attacker.address, sequence: 901, expiresAtS: 100_000)
        let checks = s.net.nodes[1].counters.verifications
        s.attack([GossipEntry(stale, hops: 0, metric: 0), GossipEntry(tooFar, hops: 0, metric: 0)])
        #expect(s.net.nodes[1].counters.expired == 2)
        #expect(s.net.nodes[1].counters.verifications == checks, "refused before any signature work")
        #expect(s.bobIsWhereHeIs())
        // A short-lived announcement: taken while valid, dropped (and withdrawn downstream) when it expires (routes
        // are looked at once a second), without waiting for the 35 s hold.
        let brief = HostAnnouncement.sign(wallet: bobKey, origin: s.attacker.address, sequence: 902, expiresAtS: 5)
        s.attack([GossipEntry(brief, hops: 0, metric: 0)])
        #expect(s.net.nodes[2].route(to: s.bob)?.sequence == 902)
        s.net.advance(5_000 + GossipEngine.pruneIntervalMs)
        #expect(s.net.nodes[1].route(to: s.bob)?.sequence != 902)
        #expect(s.net.nodes[2].route(to: s.bob)?.sequence != 902)
    }

    @Test func refutedRouteIsDroppedWithdrawnAndNotTakenAgain() {
        var s = Setup()
        let bobKey = s.net.walletKeys[0]
        // A genuine but stale announcement (Bob left the attacker's node) wins by sequence ...
        let stale = HostAnnouncement.sign(wallet: bobKey, origin: s.attacker.address, sequence: 50, expiresAtS: 600)
        s.attack([GossipEntry(stale, hops: 0, metric: 0)])
        #expect(s.net.nodes[1].route(to: s.bob)?.origin == s.attacker.address)
        #expect(s.net.nodes[2].route(to: s.bob)?.origin == s.attacker.address)
        // ... until the call-time check finds the home node does not host Bob.
        s.net.deliver(s.net.nodes[1].refute(s.bob, origin: s.attacker.address, nowMs: s.net.now), from: 1)
        #expect(s.net.nodes[1].counters.refuted == 1)
        #expect(s.net.nodes[1].route(to: s.bob) == nil, "node 0's older announcement is outdated; the DHT decides")
        #expect(s.net.nodes[2].route(to: s.bob) == nil, "the refuted route was withdrawn downstream")
        s.attack([GossipEntry(stale, hops: 0, metric: 0)])
        #expect(s.net.nodes[1].route(to: s.bob) == nil)
        // Bob announces again from his home: a newer sequence is taken.
        let back = HostAnnouncement.sign(wallet: bobKey, origin: s.net.addresses[0], sequence: 51, expiresAtS: 600)
        _ = s.net.nodes[1].receive(GossipMessage.update([GossipEntry(back, hops: 0, metric: 0)], table: 0).serialize(),
                                   from: s.net.addresses[0], nowMs: s.net.now)
        #expect(s.net.nodes[1].route(to: s.bob)?.origin == s.net.addresses[0])
    }

    @Test func verifiedAnnouncementsAreNotCheckedAgain() {
        var net = GossipNet(count: 4)
        net.link(0, 1)
        net.link(0, 2)
        net.link(1, 3)
        net.link(2, 3)
        let checks = net.nodes[3].counters.verifications
        // Node 3 heard node 0's announcement from 1 and from 2, and digests refresh it for a minute: one check.
        net.advance(60_000)
        #expect(net.nodes[3].route(to: net.wallets[0]) != nil)
        #expect(checks == 3, "wallets 0, 1, 2 once each (wallet 0 arrived twice)")
        #expect(net.nodes[3].counters.verifications == checks)
        let update = GossipMessage.update([net.nodes[1].route(to: net.wallets[0])!], table: 0).serialize()
        for _ in 0..<1_000 { _ = net.nodes[3].receive(update, from: net.addresses[1], nowMs: net.now) }
        #expect(net.nodes[3].counters.verifications == checks)
    }

    @Test func signatureWorkPerNeighbourIsBounded() {
        var config = GossipConfig()
        config.verificationsPerSecond = 50
        config.verificationBurst = 20
        var engine = GossipEngine(local: PrivateKey().address, hosted: [], sequence: 1, config: config, nowMs: 0)
        let attacker = PrivateKey()
        _ = engine.neighbourUp(attacker.address, cost: 1, nowMs: 0)
        func forgeries(_ n: Int) -> [[UInt8]] {
            (0..<n / GossipMessage.maxEntries).map { _ in
                GossipMessage.update((0..<GossipMessage.maxEntries).map { _ in
                    var a = HostAnnouncement.sign(wallet: attacker, origin: attacker.address, sequence: 1, expiresAtS: 600)
                    a.wallet = PrivateKey().address
                    return GossipEntry(a, hops: 0, metric: 0)
                }, table: 0).serialize()
            }
        }
        // 1,000 forged entries within one second: 20 (the burst) plus what 1 s earns (50) are checked.
        for (i, message) in forgeries(1_000).enumerated() { _ = engine.receive(message, from: attacker.address, nowMs: Int64(i * 10)) }
        #expect(engine.counters.verifications <= 70)
        #expect(engine.counters.forged == engine.counters.verifications)
        #expect(engine.counters.deferred == 1_000 - engine.counters.verifications)
        #expect(engine.routes(nowMs: 1_000).isEmpty)
        // Deferred entries are asked for again (full table) once the bucket has refilled.
        let later = engine.tick(nowMs: 1_000 + 1_000)
        #expect(later.contains(.send(GossipMessage.requestFull.serialize(), to: attacker.address)))
    }

    @Test func deferredRoutesArriveOnceTheBudgetAllows() {
        // 300 genuine wallets behind one neighbour, 100 checks a second: they all arrive, a budget at a time.
        var net = GossipNet(count: 2)
        let many = (0..<300).map { _ in PrivateKey() }
        net.nodes[0] = GossipEngine(local: net.addresses[0], hosted: many, sequence: 1, nowMs: 0)
        net.link(0, 1)
        // Its own wallet, plus 100 routes checked at once (the burst); the rest wait.
        #expect(net.nodes[1].routes(nowMs: net.now).count == 101)
        net.advance(10_000)
        #expect(net.nodes[1].routes(nowMs: net.now).count == 301)
        #expect(net.nodes[1].counters.verifications == 300)
    }

    /// A re-signed announcement that has to wait for the neighbour's budget does not take away the route the
    /// neighbour gave before (review finding: a deferral dropped it and withdrew it downstream).
    @Test func aDeferredReannouncementKeepsTheRouteItWouldReplace() {
        var config = GossipConfig()
        config.verificationsPerSecond = 1
        config.verificationBurst = 1
        var engine = GossipEngine(local: PrivateKey().address, hosted: [], sequence: 1, config: config, nowMs: 0)
        let neighbour = PrivateKey(), bob = PrivateKey()
        _ = engine.neighbourUp(neighbour.address, cost: 1, nowMs: 0)
        func announce(_ sequence: UInt32, at now: Int64) {
            let a = HostAnnouncement.sign(wallet: bob, origin: neighbour.address, sequence: sequence, expiresAtS: 600)
            _ = engine.receive(GossipMessage.update([GossipEntry(a, hops: 0, metric: 0)], table: 0).serialize(),
                               from: neighbour.address, nowMs: now)
        }
        announce(1, at: 0)
        #expect(engine.route(to: bob.address)?.sequence == 1)
        announce(2, at: 10)
        #expect(engine.counters.deferred == 1)
        #expect(engine.route(to: bob.address)?.sequence == 1, "the verified route stands while its successor waits")
    }

    @Test func hostedWalletsAreSignedAgainBeforeTheyExpire() {
        var net = GossipNet(count: 2)
        net.link(0, 1)
        let first = net.nodes[1].route(to: net.wallets[0])!.announcement
        #expect(first.isAuthentic)
        net.advance(400_000)
        let later = net.nodes[1].route(to: net.wallets[0])!.announcement
        #expect(GossipEngine.newer(later.sequence, than: first.sequence))
        #expect(later.expiresAtMs > net.now)
        #expect(later.isAuthentic)
    }
}
