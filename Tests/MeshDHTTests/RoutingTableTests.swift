@testable import MeshDHT
import MeshTestKit
import Testing

@Suite struct RoutingTableTests {
    var random = TestRandom(seed: 11)
    let me: NodeID
    var config = DHTConfig()

    init() {
        me = random.id()
        config.k = 4
        config.replacementCacheSize = 3
    }

    /// A contact in `bucket` with a public address in its own /24 (unless `ip` is given).
    mutating func contact(in bucket: Int, ip: [UInt8]? = nil) -> Contact {
        let id = me.randomID(inBucket: bucket, using: &random.rng)
        let address = ip ?? [44, UInt8.random(in: 0...255, using: &random.rng), UInt8.random(in: 0...255, using: &random.rng), 9]
        return Contact(id: id, endpoint: DHTEndpoint(ip: address, port: 4460)!)
    }

    @Test mutating func bucketsKeepLeastRecentlySeenFirstAndMoveTheSeenToTheTail() {
        var table = RoutingTable(localID: me, config: config)
        let contacts = (0..<3).map { _ in contact(in: 255) }
        for (i, c) in contacts.enumerated() {
            #expect(table.observe(c, nowMs: Int64(i), confirmed: true) == .inserted)
        }
        #expect(table.buckets[255].entries.map(\.contact) == contacts)
        #expect(table.observe(contacts[0], nowMs: 10, rttMs: 40, confirmed: true) == .updated)
        #expect(table.buckets[255].entries.map(\.contact) == [contacts[1], contacts[2], contacts[0]])
        #expect(table.buckets[255].entries.last?.lastSeenMs == 10)
        #expect(table.buckets[255].entries.last?.rttMs == 40)
        #expect(table.count == 3)
        #expect(table.observe(Contact(id: me, endpoint: contacts[0].endpoint), nowMs: 0, confirmed: true) == .ignored)
    }

    @Test mutating func onlyConfirmedAnswersMoveAKnownContactToANewEndpoint() {
        var table = RoutingTable(localID: me, config: config)
        let c = contact(in: 250)
        _ = table.observe(c, nowMs: 0, confirmed: true)
        var moved = c
        moved.endpoint = endpoint("45.1.1.1:1")
        _ = table.observe(moved, nowMs: 1, confirmed: false)
        #expect(table.buckets[250].entries[0].contact.endpoint == c.endpoint)
        _ = table.observe(moved, nowMs: 2, confirmed: true)
        #expect(table.buckets[250].entries[0].contact.endpoint == moved.endpoint)
    }

    @Test mutating func aFullBucketCachesNewcomersAndChecksItsLeastRecentlySeen() {
        var table = RoutingTable(localID: me, config: config)
        let members = (0..<4).map { _ in contact(in: 255) }
        for c in members { _ = table.observe(c, nowMs: 0, confirmed: true) }
        let newcomers = (0..<5).map { _ in contact(in: 255) }
        #expect(table.observe(newcomers[0], nowMs: 1, confirmed: true) == .cached(check: members[0]))
        // One check at a time.
        #expect(table.observe(newcomers[1], nowMs: 1, confirmed: true) == .cached(check: nil))
        // The checked member answers: it stays (now most recent) and the newcomers keep waiting.
        #expect(table.observe(members[0], nowMs: 2, confirmed: true) == .updated)
        #expect(table.buckets[255].entries.map(\.contact) == Array(members[1...]) + [members[0]])
        // The next newcomer starts a check of the new least recently seen.
        #expect(table.observe(newcomers[2], nowMs: 3, confirmed: true) == .cached(check: members[1]))
        // The replacement cache keeps the newest `replacementCacheSize`.
        for c in newcomers[3...] { _ = table.observe(c, nowMs: 3, confirmed: true) }
        #expect(table.buckets[255].replacements.map(\.contact) == Array(newcomers[2...]))
        // A timeout of the check evicts the checked entry for the newest replacement.
        #expect(table.observe(newcomers[1], nowMs: 4, confirmed: true) == .cached(check: nil))
        let removed1 = table.failed(members[1].id)
        #expect(removed1)
        #expect(!table.contains(members[1].id))
        #expect(table.buckets[255].entries.last?.contact == newcomers[1])
        #expect(table.count == 4)
    }

    @Test mutating func unansweredRequestsEvictAfterMaxFailuresOrAtOnceWhenAReplacementWaits() {
        config.maxFailures = 2
        var table = RoutingTable(localID: me, config: config)
        let c = contact(in: 200)
        _ = table.observe(c, nowMs: 0, confirmed: true)
        let removed2 = table.failed(c.id)
        #expect(!removed2)
        let removed3 = table.failed(c.id)
        #expect(removed3)
        #expect(table.count == 0)

        let members = (0..<4).map { _ in contact(in: 201) }
        for m in members { _ = table.observe(m, nowMs: 0, confirmed: true) }
        let waiting = contact(in: 201)
        _ = table.observe(waiting, nowMs: 1, confirmed: true)
        let removed4 = table.failed(members[2].id)
        #expect(removed4)
        #expect(table.buckets[201].entries.map(\.contact.id).contains(waiting.id))
        // An answer resets the failure count.
        _ = table.failed(members[3].id)
        _ = table.observe(members[3], nowMs: 2, confirmed: true)
        #expect(table.buckets[201].entries.last?.failures == 0)
    }

    @Test mutating func perPrefixLimitsHoldPerBucketAndPerTable() {
        config.k = 20
        config.perPrefixBucketLimit = 2
        config.perPrefixLimit = 3
        var table = RoutingTable(localID: me, config: config)
        let sameNet: [UInt8] = [44, 7, 7]
        let a = contact(in: 255, ip: sameNet + [1]), b = contact(in: 255, ip: sameNet + [2]), c = contact(in: 255, ip: sameNet + [3])
        #expect(table.observe(a, nowMs: 0, confirmed: true) == .inserted)
        #expect(table.observe(b, nowMs: 0, confirmed: true) == .inserted)
        #expect(table.observe(c, nowMs: 0, confirmed: true) == .prefixLimited)
        #expect(table.observe(contact(in: 254, ip: sameNet + [4]), nowMs: 0, confirmed: true) == .inserted)
        #expect(table.observe(contact(in: 253, ip: sameNet + [5]), nowMs: 0, confirmed: true) == .prefixLimited)
        // Another /24 is independent; loopback and private addresses are exempt.
        #expect(table.observe(contact(in: 255, ip: [44, 7, 8, 1]), nowMs: 0, confirmed: true) == .inserted)
        for i in 0..<5 { #expect(table.observe(contact(in: 255, ip: [127, 0, 0, 1]), nowMs: Int64(i), confirmed: true) == .inserted) }
        for i in 0..<5 { #expect(table.observe(contact(in: 252, ip: [192, 168, 1, UInt8(i)]), nowMs: 0, confirmed: true) == .inserted) }
        // IPv6 counts the /48.
        let v6 = { (last: UInt8) in DHTEndpoint(ip: [0x20, 0x01, 0x0d, 0xb8, 0, 1] + [UInt8](repeating: 0, count: 9) + [last], port: 1)! }
        #expect(table.observe(Contact(id: me.randomID(inBucket: 251, using: &random.rng), endpoint: v6(1)), nowMs: 0, confirmed: true) == .inserted)
        #expect(table.observe(Contact(id: me.randomID(inBucket: 251, using: &random.rng), endpoint: v6(2)), nowMs: 0, confirmed: true) == .inserted)
        #expect(table.observe(Contact(id: me.randomID(inBucket: 251, using: &random.rng), endpoint: v6(3)), nowMs: 0, confirmed: true) == .prefixLimited)
        // Removing one frees its place.
        _ = table.failed(a.id); _ = table.failed(a.id); _ = table.failed(a.id)
        #expect(table.observe(c, nowMs: 1, confirmed: true) == .inserted)
    }

    @Test mutating func closestMatchesABruteForceSortForRandomTablesAndTargets() {
        config.k = 8
        for round in 0..<20 {
            var table = RoutingTable(localID: me, config: config)
            var all: [Contact] = []
            for _ in 0..<300 {
                let c = Contact(id: random.id(), endpoint: DHTEndpoint(ip: [10, 0, UInt8(all.count >> 8), UInt8(all.count & 255)], port: 1)!)
                if table.observe(c, nowMs: 0, confirmed: true) == .inserted { all.append(c) }
            }
            let target = round % 5 == 0 ? me : random.id()
            let expected = all.sorted { $0.id.distance(to: target) < $1.id.distance(to: target) }.prefix(12)
            #expect(table.closest(to: target, count: 12) == Array(expected))
            #expect(Set(table.allEntries.map(\.entry.contact)) == Set(all))
            for (bucket, entry) in table.allEntries { #expect(me.bucketIndex(of: entry.contact.id) == bucket) }
            #expect(table.buckets.allSatisfy { $0.entries.count <= config.k })
        }
    }

    @Test mutating func restoredContactsAreUnverifiedUntilTheyAnswer() {
        var table = RoutingTable(localID: me, config: config)
        let c = contact(in: 240)
        table.restore(c, nowMs: 0)
        table.restore(c, nowMs: 0)
        #expect(table.count == 1)
        #expect(table.buckets[240].entries[0].verified == false)
        _ = table.observe(c, nowMs: 1, confirmed: true)
        #expect(table.buckets[240].entries[0].verified)
    }
}
