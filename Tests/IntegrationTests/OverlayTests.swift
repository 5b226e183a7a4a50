import Foundation
import MeshControl
@testable import MeshDaemon
import MeshIdentity
import MeshRouting
import MeshWire
import Testing

/// Gossip and the DHT across real `mesh-node run` processes on loopback.
@Suite(.serialized) struct OverlayTests {
    @Test func gossipResolvesAWalletTwoHopsAwayAndWithdrawsIt() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let c = try NodeProcess("c", in: scratch, arguments: [])
        let b = try NodeProcess("b", in: scratch, arguments: ["--peer", "127.0.0.1:\(c.port)"])
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", "127.0.0.1:\(b.port)"])
        defer { [a, b, c].forEach { $0.stop() } }

        func route(_ node: NodeProcess, to wallet: String) throws -> JSONValue? {
            try node.ctlJSON(["gossip"])["routes"]?.arrayValue?.first { $0["wallet"]?.stringValue == wallet }
        }
        let deadline = Date().addingTimeInterval(10)
        var found: JSONValue?
        while found == nil && Date() < deadline {
            found = try route(a, to: c.address)
            if found == nil { usleep(100_000) }
        }
        #expect(found?["hops"]?.intValue == 2)
        #expect(found?["via"]?.stringValue == b.address)
        #expect(found?["origin"]?.stringValue == c.address)
        let table = try a.ctl(["gossip"]).stdout
        #expect(table.contains("HOPS") && table.contains(c.address))

        // C leaves: B's link times out and the withdrawal reaches A.
        c.stop()
        let gone = Date().addingTimeInterval(20)
        while try route(a, to: c.address) != nil && Date() < gone { usleep(200_000) }
        #expect(try route(a, to: c.address) == nil)
    }

    /// A neighbour that says "I host Bob" with a far newer sequence (issue 8): it cannot sign for Bob's wallet,
    /// so the caller refuses the claim, does not pass it on, and its call still reaches Bob's real home node.
    @Test func forgedHostAnnouncementDoesNotDivertCalls() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let b = try NodeProcess("b", in: scratch, arguments: ["--auto-answer", "echo"])
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", "\(b.address)@127.0.0.1:\(b.port)"])
        let c = try NodeProcess("c", in: scratch, arguments: ["--peer", "\(a.address)@127.0.0.1:\(a.port)"])
        defer { [a, b, c].forEach { $0.stop() } }
        let bob = b.address
        let rogue = try RogueNode()
        let nodeA = try WalletAddress(parsing: a.address)
        try rogue.link(to: a.port, node: nodeA)

        func route(_ node: NodeProcess) -> JSONValue? {
            (try? node.ctlJSON(["gossip"]))?["routes"]?.arrayValue?.first { $0["wallet"]?.stringValue == bob }
        }
        let deadline = Date().addingTimeInterval(15)
        while (route(a) == nil || route(c) == nil) && Date() < deadline { rogue.pump(seconds: 0.2) }
        let sequence = try #require(route(a)?["sequence"]?.intValue)
        #expect(route(c)?["origin"]?.stringValue == bob)

        // The rogue holds only its own key: it signs "rogue hosts Bob" with that and puts Bob's address in.
        let rogueAddress = rogue.links.identity.address
        var forged = HostAnnouncement.sign(wallet: rogue.links.identity, origin: rogueAddress, sequence: UInt32(sequence) + 1_000,
                                           expiresAtS: UInt32(Date().timeIntervalSince1970) + 300)
        forged.wallet = try WalletAddress(parsing: bob)
        let update = GossipMessage.update([GossipEntry(forged, hops: 0, metric: 0)], table: 0).serialize()
        rogue.run(rogue.links.send(AppMessage.gossip(update).serialize(), to: nodeA, now: RogueNode.now))
        func forgedCount() -> Int { (try? a.ctlJSON(["gossip"]))?["counters"]?["forged"]?.intValue ?? 0 }
        let refused = Date().addingTimeInterval(10)
        while forgedCount() == 0 && Date() < refused { rogue.pump(seconds: 0.2) }
        #expect(forgedCount() == 1)
        rogue.pump(seconds: 1)
        #expect(route(a)?["origin"]?.stringValue == bob)
        #expect(route(a)?["sequence"]?.intValue == sequence)
        #expect(route(c)?["origin"]?.stringValue == bob, "the lie did not spread")

        // A call to Bob from A goes to B and is answered; the rogue (still linked to A) sees no offer.
        let socket = a.socket
        let placing = Background {
            try runCommand(Binaries.meshNode, ["call", bob, "--control-socket", socket, "--duration", "1", "--json"], timeout: 30)
        }
        rogue.pump(seconds: 4)
        let result = try placing.wait()
        let summary = try? decodeJSON(result.stdout)
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(summary?["via"]?.stringValue == bob)
        #expect(summary?["reason"]?.stringValue == "hangup")
        #expect(!rogue.received.contains { ChainMessage.claims($0) }, "no chain set-up or call bytes went to the rogue")
    }

    /// A route that is authentic but stale: Bob's key once announced him at another node (here the rogue, which
    /// holds a copy of Bob's key), with a newer sequence than his real home's. At call time that node does not
    /// confirm it hosts Bob, so the caller refutes the route and reaches Bob's real home through the DHT.
    @Test func unconfirmedGossipRouteFallsBackToTheDHT() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let bobKey = PrivateKey()
        let keyFile = scratch.file("bob.key")
        let imported = try runCommand(Binaries.meshNode, ["identity", "import", "--private-key-hex", Hex.encode(bobKey.bytes), "--out", keyFile])
        #expect(imported.status == 0, "\(imported.stderr)")
        let b = try NodeProcess("b", in: scratch, arguments: ["--wallet", keyFile, "--auto-answer", "echo"])
        let a = try NodeProcess("a", in: scratch, arguments: ["--peer", "\(b.address)@127.0.0.1:\(b.port)"])
        defer { [a, b].forEach { $0.stop() } }
        let bob = bobKey.address.checksummed
        let rogue = try RogueNode()
        let nodeA = try WalletAddress(parsing: a.address)
        try rogue.link(to: a.port, node: nodeA)

        func route() -> JSONValue? {
            (try? a.ctlJSON(["gossip"]))?["routes"]?.arrayValue?.first { $0["wallet"]?.stringValue == bob }
        }
        func inDHT() -> Bool { (try? a.ctlJSON(["dht", "lookup", bob]))?["record"]?["homeNode"]?.stringValue == b.address }
        let deadline = Date().addingTimeInterval(20)
        while (route() == nil || !inDHT()) && Date() < deadline { rogue.pump(seconds: 0.2) }
        let sequence = try #require(route()?["sequence"]?.intValue)
        #expect(inDHT())

        let rogueAddress = rogue.links.identity.address
        let stale = HostAnnouncement.sign(wallet: bobKey, origin: rogueAddress, sequence: UInt32(sequence) + 1_000,
                                          expiresAtS: UInt32(Date().timeIntervalSince1970) + 300)
        let update = GossipMessage.update([GossipEntry(stale, hops: 0, metric: 0)], table: 0).serialize()
        rogue.run(rogue.links.send(AppMessage.gossip(update).serialize(), to: nodeA, now: RogueNode.now))
        let taken = Date().addingTimeInterval(10)
        while route()?["origin"]?.stringValue != rogueAddress.checksummed && Date() < taken { rogue.pump(seconds: 0.2) }
        #expect(route()?["origin"]?.stringValue == rogueAddress.checksummed, "an authentic announcement is taken")

        // The call: A asks the rogue whether it hosts Bob; it says no. A refutes the route and asks the DHT.
        let socket = a.socket
        let placing = Background {
            try runCommand(Binaries.meshNode, ["call", bob, "--control-socket", socket, "--duration", "1", "--json"], timeout: 30)
        }
        var answered = 0
        let window = Date().addingTimeInterval(5)
        while Date() < window {
            rogue.pump(seconds: 0.1)
            for payload in rogue.received.dropFirst(answered) {
                if case .resolveRequest(let query, let address) = AppMessage(parsing: payload) {
                    rogue.run(rogue.links.send(AppMessage.resolveReply(query: query, address: address, hosted: false).serialize(),
                                               to: nodeA, now: RogueNode.now))
                }
            }
            answered = rogue.received.count
        }
        let result = try placing.wait()
        let summary = try? decodeJSON(result.stdout)
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(summary?["via"]?.stringValue == b.address)
        #expect(summary?["reason"]?.stringValue == "hangup")
        #expect((try? a.ctlJSON(["gossip"]))?["counters"]?["refuted"]?.intValue == 1)
        #expect(route()?["origin"]?.stringValue != rogueAddress.checksummed)
    }
}
