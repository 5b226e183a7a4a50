@testable import MeshDHT
import MeshTestKit
import Testing

@Suite struct PresencePolicyTests {
    static func endpoint(_ i: UInt8) -> DHTEndpoint { DHTEndpoint(ip: [10, 0, 0, i], port: 4000)! }

    static func neighbours(_ count: Int) -> [Contact] {
        var random = SplitMix64(seed: 7)
        return (0..<count).map { Contact(id: NodeID.random(using: &random), endpoint: endpoint(UInt8(20 + $0))) }
    }

    @Test func reachIsTheAdvertisedOrBoundEndpointAndTheFirstFourNeighbours() {
        let bound = Self.endpoint(1)
        let advertised = PresencePolicy(relayOnly: false, advertised: [Self.endpoint(9)], now: 0)
        #expect(advertised.reach(bound: bound, neighbours: []).endpoints == [Self.endpoint(9)])
        let plain = PresencePolicy(relayOnly: false, advertised: [], now: 0)
        #expect(plain.reach(bound: bound, neighbours: []).endpoints == [bound])
        #expect(plain.reach(bound: DHTEndpoint(ip: [0, 0, 0, 0], port: 4000)!, neighbours: []).endpoints == [], "0.0.0.0 is no address to dial")
        let relayOnly = PresencePolicy(relayOnly: true, advertised: [Self.endpoint(9)], now: 0)
        #expect(relayOnly.reach(bound: bound, neighbours: []).endpoints == [])
        let six = Self.neighbours(6)
        #expect(plain.reach(bound: bound, neighbours: six).relays == Array(six.prefix(PresencePolicy.maxRelays)))
    }

    @Test func aChangedReachIsPublishedAtTheNextCheckOnly() {
        var policy = PresencePolicy(relayOnly: false, advertised: [], now: 100_000)
        var facts: (bound: DHTEndpoint?, neighbours: [Contact]) = (Self.endpoint(1), [])
        policy.didPublish(policy.reach(bound: facts.bound, neighbours: facts.neighbours), contacts: 40)
        let later = 100_000 + PresencePolicy.joinWindowMs
        #expect(policy.due(now: later, contacts: 40, current: { facts }) == nil, "unchanged")
        facts.neighbours = Self.neighbours(1)
        #expect(policy.due(now: later + 1, contacts: 40, current: { facts }) == nil, "not before the next check")
        #expect(policy.nextCheck == later + PresencePolicy.reachCheckMs)
        #expect(policy.due(now: policy.nextCheck, contacts: 40, current: { facts })?.relays == facts.neighbours)
    }

    @Test func duringTheJoinWindowEachDoublingOfTheTablePublishesAgain() {
        var policy = PresencePolicy(relayOnly: false, advertised: [], now: 0)
        let facts: (bound: DHTEndpoint?, neighbours: [Contact]) = (Self.endpoint(1), [])
        policy.didPublish(policy.reach(bound: facts.bound, neighbours: facts.neighbours), contacts: 0)
        _ = policy.due(now: 0, contacts: 0, current: { facts })
        var published: [Int] = []
        for (now, contacts) in [(100, 1), (200, 1), (300, 2), (400, 3), (500, 4), (600, 7), (700, 8)] as [(Int64, Int)] {
            if let again = policy.due(now: now, contacts: contacts, current: { facts }) {
                policy.didPublish(again, contacts: contacts)
                published.append(contacts)
            }
        }
        #expect(published == [1, 2, 4, 8])
        #expect(policy.due(now: PresencePolicy.joinWindowMs + 1, contacts: 100, current: { facts }) == nil, "not after the window")
    }
}
