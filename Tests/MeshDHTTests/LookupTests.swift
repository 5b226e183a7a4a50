@testable import MeshDHT
import MeshTestKit
import Testing

/// The lookup state machine against an oracle network: every live node answers with the k live ids closest to
/// the target, leaving out the asking node (as FIND_NODE answers do); dead nodes never answer.
@Suite struct LookupTests {
    struct Oracle {
        let ids: [NodeID]
        let dead: Set<NodeID>

        func contact(_ id: NodeID) -> Contact {
            Contact(id: id, endpoint: DHTEndpoint(ip: [10, 9, 9, 9], port: 1)!)
        }

        /// The answer to the lookup's origin, `ids[0]`.
        func answer(to target: NodeID, count: Int) -> [NodeID] {
            Array(ids.dropFirst().filter { !dead.contains($0) }
                .sorted { $0.distance(to: target) < $1.distance(to: target) }.prefix(count))
        }
    }

    /// Runs a lookup to the end, answering in batches; returns it and the most requests ever in flight.
    func drive(_ oracle: Oracle, target: NodeID, seeds: [NodeID], config: DHTConfig, rng: inout SplitMix64)
        -> (Lookup, maxInFlight: Int, steps: Int)
    {
        let me = oracle.ids[0]
        var lookup = Lookup(id: LookupID(rawValue: 1), target: target, kind: .findNode, localID: me,
                            seeds: seeds.map(oracle.contact), nowMs: 0, config: config)
        var inFlight: [NodeID] = []
        var maxInFlight = 0, steps = 0
        while !lookup.isFinished, steps < 10_000 {
            steps += 1
            inFlight += lookup.next().map(\.id)
            maxInFlight = max(maxInFlight, inFlight.count)
            guard !inFlight.isEmpty else { continue }
            // Answers arrive in any order.
            let id = inFlight.remove(at: Int.random(in: 0..<inFlight.count, using: &rng))
            if oracle.dead.contains(id) {
                lookup.failed(id)
            } else {
                lookup.answered(id, contacts: oracle.answer(to: target, count: config.k).map(oracle.contact))
            }
        }
        return (lookup, maxInFlight, steps)
    }

    @Test func findsTheTrueClosestWithAtMostAlphaInFlight() {
        var rng = SplitMix64(seed: 41)
        var config = DHTConfig()
        config.k = 8
        for round in 0..<30 {
            let ids = (0..<200).map { _ in NodeID.random(using: &rng) }
            let oracle = Oracle(ids: ids, dead: [])
            let target = NodeID.random(using: &rng)
            let seeds = Array(ids.dropFirst().shuffled(using: &rng).prefix(1 + round % 8))
            let (lookup, maxInFlight, _) = drive(oracle, target: target, seeds: seeds, config: config, rng: &rng)
            #expect(lookup.isFinished)
            #expect(maxInFlight <= config.alpha)
            #expect(lookup.outcome(nowMs: 0).closest.map(\.id) == oracle.answer(to: target, count: config.k))
            // Perfect answers: the seeds' reply already holds the k closest; little beyond them is asked.
            #expect(lookup.messages <= seeds.count + config.k + config.alpha)
        }
    }

    @Test func terminatesWhenNodesFailAndSkipsThem() {
        var rng = SplitMix64(seed: 42)
        var config = DHTConfig()
        config.k = 8
        for _ in 0..<30 {
            let ids = (0..<150).map { _ in NodeID.random(using: &rng) }
            let dead = Set(ids.dropFirst().filter { _ in Double.random(in: 0..<1, using: &rng) < 0.3 })
            let oracle = Oracle(ids: ids, dead: dead)
            let target = NodeID.random(using: &rng)
            let seeds = Array(ids.dropFirst().shuffled(using: &rng).prefix(5))
            let (lookup, maxInFlight, steps) = drive(oracle, target: target, seeds: seeds, config: config, rng: &rng)
            #expect(lookup.isFinished && steps < 10_000)
            #expect(maxInFlight <= config.alpha)
            let closest = lookup.outcome(nowMs: 0).closest.map(\.id)
            #expect(closest.allSatisfy { !dead.contains($0) })
            #expect(closest == oracle.answer(to: target, count: config.k))
        }
    }

    @Test func aValueLookupStopsAtTheFirstRecord() {
        var random = TestRandom(seed: 43)
        let ids = (0..<30).map { _ in random.id() }
        let record = PresenceRecord.make(wallet: random.key(), homeNode: ids[1], endpoints: [], relays: [], sequence: 1,
                                         expiresAtMs: t0 + 60_000)
        var lookup = Lookup(id: LookupID(rawValue: 1), target: record.key, kind: .findValue, localID: ids[0],
                            seeds: ids[1...].map { Contact(id: $0, endpoint: endpoint("10.0.0.1:1")) }, nowMs: t0,
                            config: DHTConfig())
        let first = lookup.next()
        #expect(first.count == DHTConfig().alpha)
        lookup.answered(first[1].id, contacts: [], record: record)
        #expect(lookup.isFinished)
        let outcome = lookup.outcome(nowMs: t0 + 80)
        #expect(outcome.record == record && outcome.rounds == 1 && outcome.messages == 3 && outcome.elapsedMs == 80)
        #expect(lookup.next().isEmpty)
    }
}
