import MeshIdentity
import MeshLink
@testable import MeshRouting
import Testing

@Suite struct HomeResolverTests {
    typealias Resolver = HomeResolver<String>
    let wallet = PrivateKey().address
    let home = PrivateKey().address
    let other = PrivateKey().address
    let dhtHome = Resolver.Home(node: PrivateKey().address, source: "DHT presence record", hints: [], dial: [("10.0.0.1:4000", PrivateKey().address)])

    /// Each action in a short form: the kind, and for answers the home node and how it was learned.
    func kinds(_ actions: [Resolver.Action]) -> [String] {
        actions.map { action in
            switch action {
            case .ask(_, let w, let h): "ask \(w == wallet) \(h == home)"
            case .refute(let w, let h, _): "refute \(w == wallet) \(h == home)"
            case .lookup(_, let w): "lookup \(w == wallet)"
            case .find(_, let w): "find \(w == wallet)"
            case .resolved(_, let h): "resolved \(h.node == home ? "home" : h.node == dhtHome.node ? "dht" : "other"): \(h.source)"
            case .failed(_, let why): "failed: \(why)"
            }
        }
    }

    func findQuery(_ actions: [Resolver.Action]) -> UInt64? {
        for case .find(let query, _) in actions { return query }
        return nil
    }

    func askQuery(_ actions: [Resolver.Action]) -> UInt32? {
        for case .ask(let query, _, _) in actions { return query }
        return nil
    }

    /// Ticks a copy before `nextDeadline` (it must do nothing) and the resolver itself at `now`.
    func tick(_ r: inout Resolver, at now: Int64) -> [Resolver.Action] {
        if let deadline = r.nextDeadline {
            var early = r
            #expect(early.tick(now: deadline - 1).isEmpty, "acted before its deadline")
        }
        return r.tick(now: now)
    }

    @Test func withoutARouteTheDHTAndTheLinksRaceAndTheFirstAnswerWins() {
        var r = Resolver(random: LinkRandom.seeded(1).bytes)
        let (id, start) = r.resolve(wallet, route: nil, now: 1_000)
        #expect(kinds(start) == ["lookup true", "find true"])
        #expect(r.nextDeadline == 1_000 + Resolver.answerMs)
        let done = r.dhtAnswered(id, .success(dhtHome))
        #expect(kinds(done) == ["resolved dht: DHT presence record"])
        guard case .resolved(id, _)? = done.first else { Issue.record("answer for another id"); return }
        #expect(r.found(query: findQuery(start)!, home: home).isEmpty, "the race is over")
        #expect(r.count == 0 && r.nextDeadline == nil)

        let (second, again) = r.resolve(wallet, route: nil, now: 2_000)
        #expect(findQuery(again) != findQuery(start), "a new query id")
        #expect(kinds(r.found(query: findQuery(again)!, home: home)) == ["resolved home: a query over links"])
        #expect(r.dhtAnswered(second, .success(dhtHome)).isEmpty, "the race is over")
    }

    @Test func whenBothFailTheDHTsReasonIsReportedWhicheverFailsFirst() {
        var r = Resolver(random: LinkRandom.seeded(2).bytes)
        let (a, _) = r.resolve(wallet, route: nil, now: 1_000)
        #expect(r.dhtAnswered(a, .failure(.init("no record"))).isEmpty, "the links may still answer")
        #expect(tick(&r, at: 1_000 + Resolver.answerMs - 1).isEmpty)
        #expect(kinds(tick(&r, at: 1_000 + Resolver.answerMs)) == ["failed: no record"])

        let (b, _) = r.resolve(wallet, route: nil, now: 5_000)
        #expect(tick(&r, at: 5_000 + Resolver.answerMs).isEmpty, "the DHT may still answer")
        #expect(r.nextDeadline == nil, "nothing left to time out: the DHT's lookups end on their own")
        #expect(kinds(r.dhtAnswered(b, .failure(.init("no record")))) == ["failed: no record"])
    }

    @Test func aLateAnswerOverLinksStillWinsWhileTheDHTHasNotAnswered() {
        var r = Resolver(random: LinkRandom.seeded(3).bytes)
        let (id, start) = r.resolve(wallet, route: nil, now: 1_000)
        #expect(tick(&r, at: 4_000).isEmpty)
        #expect(kinds(r.found(query: findQuery(start)!, home: home)) == ["resolved home: a query over links"])
        #expect(r.dhtAnswered(id, .failure(.init("no record"))).isEmpty)
        #expect(r.found(query: 42, home: home).isEmpty, "a query nobody asked")
    }

    @Test func aRouteToAnUnlinkedHomeNodeIsTakenAsItIs() {
        var r = Resolver(random: LinkRandom.seeded(4).bytes)
        let (_, actions) = r.resolve(wallet, route: (home: home, linked: false), now: 1_000)
        #expect(kinds(actions) == ["resolved home: gossip"])
        #expect(r.count == 0)
    }

    @Test func aLinkedHomeNodeConfirmsTheRoute() {
        var r = Resolver(random: LinkRandom.seeded(5).bytes)
        let (_, actions) = r.resolve(wallet, route: (home: home, linked: true), now: 1_000)
        #expect(kinds(actions) == ["ask true true"])
        let query = askQuery(actions)!
        #expect(r.answered(query: query &+ 1, wallet: wallet, hosted: true, from: home, now: 1_010) == nil, "another query")
        #expect(r.answered(query: query, wallet: other, hosted: true, from: home, now: 1_010) == nil, "another wallet")
        #expect(r.answered(query: query, wallet: wallet, hosted: true, from: other, now: 1_010) == nil, "another node")
        let done = r.answered(query: query, wallet: wallet, hosted: true, from: home, now: 1_010)
        #expect(done.map(kinds) == ["resolved home: gossip, confirmed by the home node"])
        #expect(r.answered(query: query, wallet: wallet, hosted: true, from: home, now: 1_020) == nil, "answered once")
    }

    @Test func aNoOrSilenceRefutesTheRouteAndTheRaceGoesOn() {
        var r = Resolver(random: LinkRandom.seeded(6).bytes)
        let (no, asked) = r.resolve(wallet, route: (home: home, linked: true), now: 1_000)
        let refused = r.answered(query: askQuery(asked)!, wallet: wallet, hosted: false, from: home, now: 1_010)
        #expect(refused.map(kinds) == ["refute true true", "lookup true", "find true"])
        #expect(kinds(r.dhtAnswered(no, .success(dhtHome))) == ["resolved dht: DHT presence record"])

        let (silent, _) = r.resolve(wallet, route: (home: home, linked: true), now: 2_000)
        #expect(r.nextDeadline == 2_000 + Resolver.answerMs)
        let timedOut = tick(&r, at: 2_000 + Resolver.answerMs)
        #expect(kinds(timedOut) == ["refute true true", "lookup true", "find true"])
        guard case .refute(_, _, let why)? = timedOut.first else { return }
        #expect(why.contains("did not answer"))
        #expect(r.nextDeadline == 4_000 + Resolver.answerMs, "the query over links now")
        #expect(kinds(r.found(query: findQuery(timedOut)!, home: other)) == ["resolved other: a query over links"])
        #expect(r.dhtAnswered(silent, .success(dhtHome)).isEmpty)
    }

    @Test func queryIdsComeFromTheRandomSource() {
        var a = Resolver(random: LinkRandom.seeded(7).bytes), b = Resolver(random: LinkRandom.seeded(7).bytes), c = Resolver(random: LinkRandom.seeded(8).bytes)
        let qa = askQuery(a.resolve(wallet, route: (home: home, linked: true), now: 0).1)
        let qb = askQuery(b.resolve(wallet, route: (home: home, linked: true), now: 0).1)
        let qc = askQuery(c.resolve(wallet, route: (home: home, linked: true), now: 0).1)
        #expect(qa == qb && qa != qc)
    }
}
