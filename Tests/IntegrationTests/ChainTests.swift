import Foundation
import MeshCall
@testable import MeshDaemon
import MeshControl
import MeshIdentity
import MeshMetrics
import MeshRouting
import MeshTestKit
import Testing

/// Relay chains through real processes on loopback (docs/forwarding.md, docs/routing.md). Which links can form is
/// set by `--peer` and `--allow-link`; the namespace tests in MeshLabTests isolate nodes at the IP level.
@Suite(.serialized) struct ChainTests {
    /// A call's summary, chain included, from `mesh-node call --json`.
    static func call(_ caller: NodeProcess, _ callee: String, duration: Double = 1, play: String? = nil,
                             record: String? = nil) throws -> (Finished, JSONValue?) {
        try call(socket: caller.socket, callee, duration: duration, play: play, record: record)
    }

    static func call(socket: String, _ callee: String, duration: Double, play: String?, record: String?) throws
        -> (Finished, JSONValue?)
    {
        var arguments = ["call", callee, "--control-socket", socket, "--duration", String(duration), "--json"]
        if let play { arguments += ["--play", play] }
        if let record { arguments += ["--record", record] }
        let result = try runCommand(Binaries.meshNode, arguments, timeout: 60)
        return (result, try? decodeJSON(result.stdout))
    }

    static func chain(_ summary: JSONValue?) -> [String] {
        summary?["chain"]?["nodes"]?.arrayValue?.compactMap(\.stringValue) ?? []
    }

    static func peer(_ node: NodeProcess) -> String { "\(node.address)@127.0.0.1:\(node.port)" }

    /// Waits until `node` has an active call and returns its id; throws, with what the node last said, when none
    /// is active within `seconds`.
    static func activeCall(at node: NodeProcess, within seconds: TimeInterval) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        var last = ""
        while Date() < deadline {
            do {
                let calls = try node.ctlJSON(["calls"])
                if let id = calls["calls"]?.arrayValue?.first(where: { $0["state"]?.stringValue == "active" })?["id"]?.stringValue {
                    return id
                }
                last = calls.prettyText()
            } catch {
                last = "\(error)"
            }
            usleep(50_000)
        }
        throw HarnessError("\(node.name): no active call within \(seconds) s; last answer: \(last)")
    }

    /// Waits until `node` has `count` links up.
    static func links(_ node: NodeProcess, _ count: Int) throws {
        try node.wait(for: "\(count) links") { ($0["peersUp"]?.intValue ?? 0) >= count }
    }

    /// The callee is found only through the DHT (the caller has no link at all, so no gossip), and its home node
    /// accepts links from its relay only: the caller's link attempt to it is dropped, and the call goes through the
    /// relay its presence record lists.
    @Test func aHomeNodeThatRefusesTheCallerIsReachedThroughItsAdvertisedRelay() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let r = try NodeProcess("r", in: scratch, arguments: [])
        let e = try NodeProcess("e", in: scratch, arguments: ["--auto-answer", "echo", "--peer", Self.peer(r), "--allow-link", r.address])
        let a = try NodeProcess("a", in: scratch, arguments: ["--bootstrap", "127.0.0.1:\(r.port)"])
        defer { [a, e, r].forEach { $0.stop() } }
        try Self.links(e, 1)
        // e's presence record, with r as its relay, is in the DHT.
        let deadline = Date().addingTimeInterval(20)
        var relays: [String] = []
        while relays.isEmpty && Date() < deadline {
            relays = (try? a.ctlJSON(["dht", "lookup", e.address]))?["record"]?["relays"]?.arrayValue?.compactMap(\.stringValue) ?? []
            if relays.isEmpty { usleep(200_000) }
        }
        #expect(relays.contains { $0.hasPrefix(r.address) }, "e's record lists r as its relay")
        #expect((try a.ctlJSON(["info"]))["peersUp"]?.intValue == 0, "the caller starts with no link")

        let (result, summary) = try Self.call(a, e.address)
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(summary?["reason"]?.stringValue == "hangup")
        #expect(Self.chain(summary) == [r.address, e.address], "\(summary?["chain"] ?? .null)")
        let refused = try e.ctlJSON(["info"])["linkCounters"]?["notAllowed"]?.intValue ?? 0
        #expect(refused >= 1, "e dropped the caller's link attempts")
        #expect(try e.ctlJSON(["peers"])["peers"]?.arrayValue?.allSatisfy { $0["address"]?.stringValue == r.address } == true)
    }

    /// A relay-only node (`--relay-only`) publishes presence records with its relays and no endpoint, so a caller
    /// that finds it only through the DHT learns nothing of where it is, and reaches it through its relay; with
    /// `--direct on` at both ends, its calls still never try a direct path.
    @Test func aRelayOnlyNodePublishesNoEndpointAndIsReachedThroughItsRelay() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let r = try NodeProcess("r", in: scratch, arguments: [])
        let e = try NodeProcess("e", in: scratch, arguments: ["--auto-answer", "echo", "--relay-only", "--direct", "on",
                                                              "--peer", Self.peer(r), "--allow-link", r.address])
        let a = try NodeProcess("a", in: scratch, arguments: ["--bootstrap", "127.0.0.1:\(r.port)", "--direct", "on"])
        defer { [a, e, r].forEach { $0.stop() } }
        try Self.links(e, 1)
        let deadline = Date().addingTimeInterval(20)
        var record: JSONValue?
        while Date() < deadline {
            record = (try? a.ctlJSON(["dht", "lookup", e.address]))?["record"]
            if record?["relays"]?.arrayValue?.isEmpty == false { break }
            usleep(200_000)
        }
        #expect(record?["relays"]?.arrayValue?.contains { $0.stringValue?.hasPrefix(r.address) == true } == true, "\(record ?? .null)")
        #expect(record?["endpoints"]?.arrayValue == [], "\(record ?? .null)")
        let (result, summary) = try Self.call(a, e.address, duration: 2)
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(Self.chain(summary) == [r.address, e.address], "\(summary?["chain"] ?? .null)")
        #expect(try e.ctlJSON(["info"])["nodeCounters"]?["directAttempts"]?.intValue == 0)
    }

    /// A relay whose session limit is reached refuses the set-up with that reason; the caller goes around it when
    /// the graph has another chain, and reports the refusal when it has not.
    @Test func aFullRelayRefusesAndTheCallerTriesAnotherChain() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        // a–b–d (b full) and a–c–x–d: the chain through b is shorter, so it is tried first.
        let d = try NodeProcess("d", in: scratch, arguments: ["--auto-answer", "echo"])
        let b = try NodeProcess("b", in: scratch, arguments: ["--max-sessions", "0", "--peer", Self.peer(d)])
        let x = try NodeProcess("x", in: scratch, arguments: ["--peer", Self.peer(d)])
        let c = try NodeProcess("c", in: scratch, arguments: ["--peer", Self.peer(x)])
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", Self.peer(b), "--peer", Self.peer(c)])
        defer { [a, b, c, x, d].forEach { $0.stop() } }
        try Self.links(a, 2)
        try Self.links(d, 2)
        // a knows node routes to d through both b and c.
        let deadline = Date().addingTimeInterval(15)
        var candidates: [String] = []
        while candidates.count < 2 && Date() < deadline {
            candidates = (try? a.ctlJSON(["route", d.address]))?["candidates"]?.arrayValue?.compactMap { $0["via"]?.stringValue } ?? []
            if candidates.count < 2 { usleep(200_000) }
        }
        #expect(candidates == [b.address, c.address], "route: \(candidates)")

        let (result, summary) = try Self.call(a, d.address)
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(Self.chain(summary) == [c.address, x.address, d.address], "\(summary?["chain"] ?? .null)")
        let counters = try b.ctlJSON(["sessions"])["counters"]
        #expect((counters?["setupsRefused"]?.intValue ?? 0) >= 1, "b refused the set-up: \(counters ?? .null)")

        // Without the other chain, the call fails and names the full relay.
        #expect(c.stop() == 0)
        try a.wait(for: "c's link gone") { $0["peersUp"]?.intValue == 1 }
        let (refused, _) = try Self.call(a, d.address)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("session limit reached") && refused.stderr.contains(b.address), "\(refused.stderr)")
    }

    /// Reject, busy, hangup by the callee, and a callee that vanishes, over a chain of two links, as between
    /// neighbours.
    /// A relayed echo call matches its audio with trunking on and off. On, every hop sends the call's packets in
    /// trunks with mini-frame headers and the next hop restores them: end-to-end SRTP accepts every packet (it
    /// would refuse any byte restored wrong), and nothing is dropped as a bad mini-frame. Off, no trunk is sent.
    @Test(arguments: ["on", "off"]) func relayedCallsMatchWithTrunkingOnAndOff(_ trunking: String) throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let c = try NodeProcess("c", in: scratch, arguments: ["--auto-answer", "echo", "--trunking", trunking])
        let b = try NodeProcess("b", in: scratch, arguments: ["--peer", Self.peer(c), "--trunking", trunking])
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", Self.peer(b), "--allow-link", b.address, "--trunking", trunking])
        defer { [a, b, c].forEach { $0.stop() } }
        try Self.links(b, 2)
        let (result, summary) = try Self.call(a, c.address, duration: 6, play: speech, record: scratch.file("reply.wav"))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(Self.chain(summary) == [b.address, c.address])
        let correlation = try speechMatch(speech, scratch.file("reply.wav"))["correlation"]?.doubleValue ?? 0
        #expect(correlation > speechMatchFloor, "trunking \(trunking): match \(correlation)")

        func metrics(_ node: NodeProcess) throws -> MetricsSnapshot {
            try JSONDecoder().decode(MetricsSnapshot.self, from: Data(node.ctl(["metrics", "--json"]).stdout.utf8))
        }
        let (ma, mb, mc) = (try metrics(a), try metrics(b), try metrics(c))
        for m in [ma, mc] { #expect(m.value("meshnode_media_srtp_rejected_total") == 0) }
        let miniIn = mb.value("meshnode_trunk_entries_in_total", ["kind": "mini"]) ?? -1
        let miniOut = mb.value("meshnode_trunk_entries_out_total", ["kind": "mini"]) ?? -1
        let restoredAtEnds = (ma.value("meshnode_trunk_entries_in_total", ["kind": "mini"]) ?? -1)
            + (mc.value("meshnode_trunk_entries_in_total", ["kind": "mini"]) ?? -1)
        for m in [ma, mb, mc] {
            for reason in ["malformed", "mini_without_context", "mini_mismatch"] {
                #expect(m.value("meshnode_trunk_dropped_total", ["reason": reason]) == 0, "\(reason)")
            }
        }
        if trunking == "on" {
            // 6 s of speech each way: about 300 packets per direction, nearly all of them mini-frames.
            #expect(miniIn > 400 && miniOut > 400 && restoredAtEnds > 400, "relay in \(miniIn), out \(miniOut); ends \(restoredAtEnds)")
        } else {
            #expect(mb.value("meshnode_trunk_trunks_total", ["direction": "in"]) == 0)
            #expect(mb.value("meshnode_trunk_trunks_total", ["direction": "out"]) == 0)
        }
    }

    @Test func callControlWorksOverAChain() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let c = try NodeProcess("c", in: scratch, arguments: ["--auto-answer", "echo"])
        let off = try NodeProcess("off", in: scratch, arguments: ["--auto-answer", "off"])
        let b = try NodeProcess("b", in: scratch, arguments: ["--peer", Self.peer(c), "--peer", Self.peer(off)])
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", Self.peer(b)])
        let x = try NodeProcess("x", in: scratch, arguments: ["--peer", Self.peer(b)])
        defer { [a, b, c, off, x].forEach { $0.stop() } }
        try Self.links(b, 4)

        // Declined by the callee's node.
        let (declined, declinedSummary) = try Self.call(a, off.address)
        #expect(declined.status != 0)
        #expect(declinedSummary?["reason"]?.stringValue == "declined" || declined.stderr.contains("declined"), "\(declined.stderr)")

        // Busy: c's wallet is in a call with a when x calls it. The call is long (it is hung up below) so that a
        // slow set-up or a slow poll on a loaded machine cannot let it end before x calls.
        let (socket, callee) = (a.socket, c.address)
        let first = Background { try Self.call(socket: socket, callee, duration: 30, play: speech, record: nil) }
        let id = try Self.activeCall(at: c, within: 20)
        let (busy, busySummary) = try Self.call(x, c.address)
        #expect(busy.status != 0)
        #expect(busySummary?["reason"]?.stringValue == "busy" || busy.stderr.contains("busy"), "\(busy.stderr)")

        // The callee hangs up: the caller's call ends with a normal hangup, long before its 30 s.
        let hungUp = try c.ctl(["hangup", id])
        #expect(hungUp.status == 0, "\(hungUp.stderr)")
        let (ended, endedSummary) = try first.wait()
        #expect(ended.status == 0, "\(ended.stderr)")
        #expect(endedSummary?["reason"]?.stringValue == "hangup")
        #expect((endedSummary?["durationS"]?.doubleValue ?? 99) < 25)
        #expect(Self.chain(endedSummary) == [b.address, c.address])
        try b.wait(for: "the chain's sessions removed") { _ in
            ((try? b.ctlJSON(["sessions"]))?["sessions"]?.arrayValue?.count ?? -1) == 0
        }

        // The callee's node dies mid-call: the caller's call ends (no chain can be rebuilt) instead of hanging.
        let lost = Background { try Self.call(socket: socket, callee, duration: 30, play: speech, record: nil) }
        _ = try Self.activeCall(at: c, within: 20)
        let killedAt = Date()
        kill(c.process.processIdentifier, SIGKILL)
        let (gone, goneSummary) = try lost.wait()
        let after = Date().timeIntervalSince(killedAt)
        #expect(gone.status != 0 || goneSummary?["reason"]?.stringValue != "hangup")
        #expect(["link lost", "media timeout"].contains(goneSummary?["reason"]?.stringValue ?? gone.stderr), "\(gone.stdout) \(gone.stderr)")
        #expect(after < 15, "the call ended \(after) s after the callee died")
    }

    /// A third node linked to a relay injects data with the call's real labels (from the wrong neighbour) and with
    /// labels never given out: the relay drops and counts every one, and nothing of it reaches the callee.
    @Test func forgedAndUnknownLabelsAtARelayNeverReachTheCallee() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let speech = try speechSample(in: scratch)
        let c = try NodeProcess("c", in: scratch, arguments: ["--auto-answer", "echo"])
        let r = try NodeProcess("r", in: scratch, arguments: ["--peer", Self.peer(c)])
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", Self.peer(r)])
        defer { [a, r, c].forEach { $0.stop() } }
        try Self.links(r, 2)
        let rogue = try RogueNode()
        let relay = try WalletAddress(parsing: r.address)
        try rogue.link(to: r.port, node: relay)

        let (socket, callee) = (a.socket, c.address)
        let placing = Background { try Self.call(socket: socket, callee, duration: 5, play: speech, record: scratch.file("reply.wav")) }
        var labels: [UInt32] = []
        let deadline = Date().addingTimeInterval(10)
        while labels.count < 2 && Date() < deadline {
            let session = (try? r.ctlJSON(["sessions"]))?["sessions"]?.arrayValue?.first { $0["state"]?.stringValue == "up" }
            labels = [session?["upstreamLabel"], session?["downstreamLabel"]].compactMap { $0?.intValue.map(UInt32.init) }
            if labels.count < 2 { usleep(50_000) }
        }
        #expect(labels.count == 2, "r relays the call")
        // The caller's live view of the chain: every hop with its figures.
        let id = try a.ctlJSON(["calls"])["calls"]?.arrayValue?.first?["id"]?.stringValue ?? "?"
        let trace = try a.ctl(["trace", String(id.prefix(6)), "--count", "2", "--interval", "0.2"])
        #expect(trace.status == 0, "\(trace.stderr)")
        #expect(trace.stdout.contains("active chain") && trace.stdout.contains(r.address) && trace.stdout.contains(c.address),
                "\(trace.stdout)")
        var rng = SplitMix64(seed: 7)
        var forged = 0
        for i in 0..<100 {
            let media = CallInner.media(rng.bytes(100)).serialize()
            let hangup = CallInner.signal(CallMessage.hangup(CallID(raw: rng.next()), .normal).serialize()).serialize()
            for label in labels {
                rogue.run(rogue.links.send(ChainMessage.data(label: label, i % 10 == 0 ? hangup : media), to: relay, now: RogueNode.now))
                forged += 1
            }
            rogue.run(rogue.links.send(ChainMessage.data(label: UInt32(truncatingIfNeeded: rng.next()) | 1, media), to: relay, now: RogueNode.now))
            rogue.pump(seconds: 0.01)
        }
        let (result, summary) = try placing.wait()
        #expect(result.status == 0, "\(result.stderr)")
        #expect(summary?["reason"]?.stringValue == "hangup")
        let m = try speechMatch(speech, scratch.file("reply.wav"))
        #expect((m["correlation"]?.doubleValue ?? 0) > speechMatchFloor, "\(m)")
        let counters = try r.ctlJSON(["sessions"])["counters"]
        #expect(counters?["wrongNeighbour"]?.intValue == forged, "\(counters ?? .null)")
        #expect((counters?["unknownLabel"]?.intValue ?? 0) >= 100, "\(counters ?? .null)")
        // The callee saw no stray call bytes and no SRTP packet that failed authentication.
        let info = try c.ctlJSON(["info"])
        #expect(info["nodeCounters"]?["callWrongChain"]?.intValue == 0)
        let media = try c.ctlJSON(["calls"])["calls"]?.arrayValue?.first?["media"]
        #expect(media?["srtpRejected"]?.intValue == 0, "\(media ?? .null)")
        #expect(!rogue.received.contains { ChainMessage.isData($0) }, "nothing of the call went to the rogue")
    }
}
