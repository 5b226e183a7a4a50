@testable import MeshDHT
import MeshIdentity
import Testing

/// Nodes whose clocks differ (docs/dht.md, "Clock skew"): within the tolerance they work together; beyond it a
/// refused request is answered with a small clock notice, and both sides count it and say why.
@Suite struct ClockSkewTests {
    /// The link layer accepts ±120 s; so does the DHT now (it dropped anything beyond 60 s, silently).
    @Test func nodesNinetySecondsApartJoinAndFindEachOther() throws {
        var net = NodeNet(count: 2)
        net.clockOffsetMs[1] = 90_000
        net.joinAll()
        #expect(net.nodes[0].contacts.map(\.id) == [net.nodes[1].localID])
        #expect(net.nodes[1].contacts.map(\.id) == [net.nodes[0].localID])
        var random = TestRandom(seed: 21)
        let wallet = random.key()
        net.run(net.nodes[1].publish(wallet: wallet, endpoints: [NodeNet.endpoint(1)], relays: [], nowMs: net.clock(1)), at: 1)
        let lookup = net.lookup(NodeID.key(for: wallet.address), from: 0)
        let found = try #require(lookup)
        #expect(found.record?.wallet == wallet.address)
        #expect(net.nodes.allSatisfy { $0.counters.staleTimestamp == 0 && $0.counters.clockNoticesSent == 0 })
    }

    /// Node 1 is 150 s ahead of node 0: node 0 refuses its requests with notices no larger than them, and
    /// logs that once a minute; node 1 counts the refusals, logs them once a minute, and its failed lookup says why.
    @Test func aRefusedRequestIsAnsweredWithANoticeAndBothSidesSayIt() throws {
        var net = NodeNet(count: 2)
        net.clockOffsetMs[1] = 150_000
        net.joinAll()
        var random = TestRandom(seed: 22)
        let (lookup, actions) = net.nodes[1].findValue(NodeID.key(for: random.key().address), nowMs: net.clock(1))
        net.run(actions, at: 1)
        net.advance(40_000)

        let refuser = net.nodes[0].counters, refused = net.nodes[1].counters
        let requests = net.wire.filter { $0.from == 1 }, notices = net.wire.filter { $0.from == 0 }
        // Bootstrap attempts were retried with backoff; each request got a notice, and nothing else came back.
        #expect(requests.count >= 3)
        #expect(notices.count == requests.count)
        #expect(notices.allSatisfy { $0.bytes.count == DHTWire.ClockNotice.byteCount })
        #expect(requests.allSatisfy { $0.bytes.count > DHTWire.ClockNotice.byteCount })
        #expect(refuser.clockNoticesSent == requests.count && refuser.staleTimestamp == requests.count)
        #expect(refused.clockNoticesReceived == notices.count && refused.unexpectedResponse == 0)
        #expect(net.nodes[0].contacts.isEmpty && net.nodes[1].contacts.isEmpty)

        // Each side logged once in these 40 s, with the skew measured.
        let theirs = try #require(net.skewReports[0]?.only)
        #expect(theirs.direction == .refusedTheirs && theirs.endpoint == NodeNet.endpoint(1))
        #expect(theirs.node == net.nodes[1].localID && theirs.skewMs == 150_000 && theirs.toleranceMs == 120_000)
        #expect(theirs.description == "DHT request from \(net.nodes[1].localID.address.checksummed) at 10.0.0.2:4460 refused:"
            + " its clock is 150 s ahead of ours (accepted: ±120 s)")
        let ours = try #require(net.skewReports[1]?.only)
        #expect(ours.direction == .refusedOurs && ours.endpoint == NodeNet.endpoint(0) && ours.skewMs == 150_000)
        #expect(ours.description == "DHT node at 10.0.0.1:4460 refused our request: our clock is 150 s ahead of its clock")

        let outcome = try #require(net.finished[1]?.last { $0.0 == lookup }?.1)
        #expect(outcome.record == nil && outcome.queried == 0)
        #expect(outcome.clockRefusals == 1 && outcome.clockSkewMs == 150_000)
        #expect(outcome.clockSkewNote == "1 DHT node refused our requests because our clock is 150 s ahead of theirs")

        // A minute later, refusals are logged again (by a join retry, or else by this fresh bootstrap).
        net.advance(21_000)
        net.run(net.nodes[1].bootstrap([NodeNet.endpoint(0)], nowMs: net.clock(1)), at: 1)
        #expect(net.skewReports[0]?.count == 2 && net.skewReports[1]?.count == 2)
    }

    /// The smallest request there is (an unpadded PING, 84 bytes), from a node whose clock is behind.
    @Test func theNoticeIsNoLargerThanTheSmallestRequest() throws {
        var random = TestRandom(seed: 23)
        var node = DHTNode(identity: random.key(), config: DHTConfig(), seed: 1)
        let ping = DHTWire.seal(DHTPacket(txid: 7, message: .ping), timestampMs: t0 - 130_000, identity: random.key())
        #expect(ping.count == DHTWire.overheadBytes)
        let actions = node.receive(ping, from: endpoint("10.0.0.2:4460"), nowMs: t0)
        let sent = actions.compactMap { if case .send(let bytes, _) = $0 { bytes } else { nil } }
        let bytes = try #require(sent.only)
        #expect(bytes.count <= ping.count)
        #expect(DHTWire.ClockNotice(parsing: bytes) == DHTWire.ClockNotice(txid: 7, clockMs: t0))
        let report = actions.compactMap { if case .clockSkew(let report) = $0 { report } else { nil } }
        #expect(report.map(\.skewMs) == [-130_000])
        #expect(report.first?.description.hasSuffix("its clock is 130 s behind ours (accepted: ±120 s)") == true)
    }

    /// A notice is unsigned: one that does not echo a request of ours in flight to the endpoint it came from
    /// is counted as unexpected and does nothing else; a genuine one counts once per request.
    @Test func aForgedNoticeIsIgnored() throws {
        var net = NodeNet(count: 3)
        net.drop = { _, _ in true }
        net.run(net.nodes[1].bootstrap([NodeNet.endpoint(0)], nowMs: net.now), at: 1)
        let request = try #require(net.wire.first { $0.from == 1 && $0.to == 0 })
        let txid = try #require(DHTWire.open(request.bytes)).packet.txid
        let clock = net.now - 150_000

        net.inject(DHTWire.ClockNotice(txid: txid ^ 1, clockMs: clock).serialized(), from: 0, to: 1)
        net.inject(DHTWire.ClockNotice(txid: txid, clockMs: clock).serialized(), from: 2, to: 1)
        #expect(net.nodes[1].counters.clockNoticesReceived == 0 && net.nodes[1].counters.unexpectedResponse == 2)
        #expect(net.skewReports[1] == nil)

        net.inject(DHTWire.ClockNotice(txid: txid, clockMs: clock).serialized(), from: 0, to: 1)
        net.inject(DHTWire.ClockNotice(txid: txid, clockMs: clock).serialized(), from: 0, to: 1)
        #expect(net.nodes[1].counters.clockNoticesReceived == 1 && net.nodes[1].counters.unexpectedResponse == 3)
        #expect(net.skewReports[1]?.map(\.skewMs) == [150_000])
        // The request stays in flight until it times out: a notice cannot end it.
        #expect(net.nodes[1].core.awaits(txid, from: NodeNet.endpoint(0)))
    }
}

extension Array {
    /// The single element, nil when there are none or several.
    var only: Element? { count == 1 ? first : nil }
}
