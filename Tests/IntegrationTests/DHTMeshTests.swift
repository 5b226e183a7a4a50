import Foundation
import MeshControl
import MeshDHT
import MeshIdentity
import MeshTestKit
import Testing

/// Twenty real `mesh-node run` processes on loopback that know each other only through the DHT.
@Suite(.serialized) struct DHTMeshTests {
    static let count = 20

    /// Starts `count` nodes; node i bootstraps from node 0 and (for i > 1) one other earlier node.
    private func startMesh(_ scratch: Scratch) throws -> [NodeProcess] {
        var rng = SplitMix64(seed: 20)
        var nodes: [NodeProcess] = []
        for i in 0..<Self.count {
            var args: [String] = []
            if i > 0 { args += ["--bootstrap", "\(nodes[0].address)@127.0.0.1:\(nodes[0].port)"] }
            if i > 1 {
                let other = nodes[1 + Int(rng.next() % UInt64(i - 1))]
                args += ["--bootstrap", "127.0.0.1:\(other.port)"]
            }
            nodes.append(try NodeProcess("n\(i)", in: scratch, arguments: args))
        }
        return nodes
    }

    private func lookup(_ client: ControlClient, _ address: String) -> JSONValue? {
        try? client.call("dht.lookup", .object(["address": .string(address)]), timeout: 10)
    }

    @Test func everyNodeFindsEveryWalletAndSurvivesARestart() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let nodes = try startMesh(scratch)
        defer { nodes.forEach { $0.stop() } }
        let clients = try nodes.map { try ControlClient(path: $0.socket) }
        defer { clients.forEach { $0.close() } }

        // Every node finds every hosted wallet (each node hosts its own address). The lookups still missing are
        // retried until 30 s after the last node started: one pass of 400 lookups alone can take over 10 s on a
        // loaded machine, and the first pass asks for the last nodes' wallets right after they started.
        var missing: [(Int, Int)] = (0..<Self.count).flatMap { i in (0..<Self.count).map { (i, $0) } }
        let started = Date()
        var passes = 0
        var maxRounds = 0
        while !missing.isEmpty && Date().timeIntervalSince(started) < 30 {
            passes += 1
            missing = missing.filter { i, j in
                guard let result = lookup(clients[i], nodes[j].address), result["record"]?["homeNode"]?.stringValue == nodes[j].address
                else { return true }
                maxRounds = max(maxRounds, result["rounds"]?.intValue ?? 0)
                return false
            }
            if !missing.isEmpty { usleep(200_000) }
        }
        print("every node found every wallet: \(missing.isEmpty) after \(String(format: "%.2f", Date().timeIntervalSince(started))) s in \(passes) passes")
        #expect(missing.isEmpty, "lookups that never succeeded: \(missing.prefix(10)); \(missing.prefix(3).map { (try? nodes[$0.0].ctlJSON(["routes"])["counters"]) ?? .null })")
        #expect(maxRounds <= 6)

        // node-ctl: the table and one lookup as a user sees them; a wallet nobody hosts is not found (exit 1).
        let routes = try nodes[5].ctl(["routes"])
        #expect(routes.status == 0 && routes.stdout.contains("BUCKET") && routes.stdout.contains("contacts in"))
        let found = try nodes[5].ctl(["dht", "lookup", nodes[17].address])
        #expect(found.status == 0 && found.stdout.contains(nodes[17].address))
        let nobody = try nodes[5].ctl(["dht", "lookup", PrivateKey().address.checksummed])
        #expect(nobody.status == 1 && nobody.stdout.contains("not found"))

        // Garbage DHT datagrams and forged records change nothing.
        let rogue = try RogueNode()
        let rogueKey = PrivateKey()
        var rng = SplitMix64(seed: 4)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let victimWallet = try WalletAddress(parsing: nodes[9].address)
        var forged = PresenceRecord.make(wallet: rogueKey, homeNode: NodeID(publicKey: rogueKey.publicKey),
                                         endpoints: [DHTEndpoint(parsing: "127.0.0.1:9")!], relays: [],
                                         sequence: UInt64(now) * 2, expiresAtMs: now + 3_600_000)
        forged.wallet = victimWallet
        // A STORE needs a proven address (docs/dht.md, "Cookies"): the rogue gets a cookie back and sends its forged
        // record again with it, so the record itself is judged (and refused for its signature).
        var stores: [UInt16: [UInt8]] = [:]
        for node in nodes {
            for _ in 0..<50 { rogue.sendRaw([DHTWire.marker] + rng.bytes(Int(rng.next() % 400)), to: node.port) }
            let store = DHTWire.seal(DHTPacket(txid: rng.next(), message: .store(forged)), timestampMs: now, identity: rogueKey)
            stores[node.port] = store
            rogue.sendRaw(store, to: node.port)
        }
        rogue.pump(seconds: 1) { rogue.dhtReceived.count >= nodes.count }
        for (port, bytes) in rogue.dhtReceived {
            guard let reply = DHTWire.CookieReply(parsing: bytes), let store = stores[port] else { continue }
            rogue.sendRaw(DHTWire.Cookied.wrap(store, cookie: reply.cookie), to: port)
        }
        usleep(300_000)
        for i in [0, 9, 15] {
            #expect(lookup(clients[i], nodes[9].address)?["record"]?["homeNode"]?.stringValue == nodes[9].address)
        }
        var refused = 0
        for node in nodes {
            let counters = try node.ctlJSON(["routes"])["counters"] ?? .null
            #expect((counters["malformed"]?.intValue ?? 0) + (counters["badSignature"]?.intValue ?? 0) >= 40)
            refused += counters["refusedRecords"].map { c in (c.objectValue ?? [:]).values.compactMap(\.intValue).reduce(0, +) } ?? 0
        }
        #expect(refused >= Self.count)

        // 4,000 requests under fresh ids from one loopback address that never answers, 1,000/s for 4 s: none of
        // those ids enters the table (only nodes that answered a request of ours do), and the source is
        // rate-limited (a burst of 1,000 and 200/s let at most 1,800 through, however many the kernel drops).
        let meshAddresses = Set(nodes.map { $0.address.lowercased() })
        let stamp = Int64(Date().timeIntervalSince1970 * 1000)
        let flood = (0..<4_000).map { _ in
            DHTWire.seal(DHTPacket(txid: rng.next(), message: .findNode(target: NodeID.random(using: &rng))), timestampMs: stamp,
                         identity: PrivateKey())
        }
        for (i, request) in flood.enumerated() {
            rogue.sendRaw(request, to: nodes[11].port)
            if i % 50 == 49 { usleep(50_000) }
        }
        usleep(500_000)
        let flooded = try nodes[11].ctlJSON(["routes"])
        let tableAddresses = (flooded["buckets"]?.arrayValue ?? []).flatMap { $0["contacts"]?.arrayValue ?? [] }
            .compactMap { $0["address"]?.stringValue?.lowercased() }
        #expect(!tableAddresses.isEmpty && tableAddresses.allSatisfy(meshAddresses.contains))
        #expect((flooded["counters"]?["rateLimited"]?.intValue ?? 0) > 0)
        usleep(2_000_000)

        // A new wallet comes online: findable from all twenty nodes (retried for up to 30 s, as above).
        let late = try NodeProcess("late", in: scratch, arguments: ["--bootstrap", "127.0.0.1:\(nodes[3].port)", "--auto-answer", "echo"])
        defer { late.stop() }
        let onlineAt = Date()
        var unseen = Set(0..<Self.count)
        while !unseen.isEmpty && Date().timeIntervalSince(onlineAt) < 30 {
            unseen = unseen.filter { lookup(clients[$0], late.address)?["record"]?["homeNode"]?.stringValue != late.address }
            if !unseen.isEmpty { usleep(100_000) }
        }
        #expect(unseen.isEmpty, "nodes that never found the new wallet: \(unseen.sorted())")
        print("new wallet findable from all \(Self.count) nodes after \(String(format: "%.2f", Date().timeIntervalSince(onlineAt))) s")

        // A call to a wallet that no neighbour hosts: found in the DHT, the caller links to its home node.
        let speech = try speechSample(in: scratch)
        let call = try runCommand(Binaries.meshNode, ["call", late.address, "--control-socket", nodes[2].socket, "--play", speech,
                                                      "--record", scratch.file("reply.wav"), "--json"], timeout: 60)
        #expect(call.status == 0, "call failed: \(call.stderr)")
        #expect(try decodeJSON(call.stdout)["via"]?.stringValue == late.address)
        let match = try speechMatch(speech, scratch.file("reply.wav"))
        let callerMedia = (try? nodes[2].ctlJSON(["calls"]))?["calls"]?.arrayValue?.last?["media"]
        let calleeMedia = (try? late.ctlJSON(["calls"]))?["calls"]?.arrayValue?.last?["media"]
        #expect((match["correlation"]?.doubleValue ?? 0) > speechMatchFloor,
                "\(match); caller: \(mediaFigures(callerMedia)); callee: \(mediaFigures(calleeMedia))")

        // SIGKILL a node and restart it alone (no bootstrap): it serves its stored table and records at once.
        let victim = nodes[7]
        let storedBefore = try victim.ctlJSON(["routes"])["records"]?.intValue ?? 0
        #expect(storedBefore > 0)
        kill(victim.process.processIdentifier, SIGKILL)
        victim.process.waitUntilExit()
        let restarted = try NodeProcess("n7", in: scratch, arguments: [])
        defer { restarted.stop() }
        #expect(restarted.address == victim.address)
        let table = try restarted.ctlJSON(["routes"])
        let restoredContacts = (table["buckets"]?.arrayValue ?? []).flatMap { $0["contacts"]?.arrayValue ?? [] }
        #expect(restoredContacts.count >= 5)
        #expect((table["records"]?.intValue ?? 0) >= storedBefore)
        let again = try ControlClient(path: restarted.socket)
        defer { again.close() }
        #expect(lookup(again, nodes[12].address)?["record"]?["homeNode"]?.stringValue == nodes[12].address)
    }

    /// Fourteen nodes started at the same moment, each bootstrapping from one random node earlier in the list
    /// (often not listening yet when asked): the DHT cores retry and re-join until every node finds every
    /// other node's wallet. Before join retries, nodes whose target was still starting stayed in islands.
    @Test func nodesStartedAtOnceConverge() throws {
        let count = 14
        let scratch = Scratch()
        defer { scratch.remove() }
        let ports = try freeLoopbackPorts(count)
        var rng = SplitMix64(seed: 24)
        var nodes: [NodeProcess] = []
        defer { nodes.forEach { $0.stop() } }
        for i in 0..<count {
            let args = i == 0 ? [] : ["--bootstrap", "127.0.0.1:\(ports[Int(rng.next() % UInt64(i))])"]
            nodes.append(try NodeProcess("s\(i)", in: scratch, arguments: args, listen: "127.0.0.1:\(ports[i])", waitUntilUp: false))
        }
        let startedAt = Date()
        for node in nodes { try node.waitUntilUp() }
        let clients = try nodes.map { try ControlClient(path: $0.socket) }
        defer { clients.forEach { $0.close() } }

        // 40 random (asker, wallet) pairs, each retried until found, for up to 40 s after the start.
        var missing = (0..<40).map { _ in (Int(rng.next() % UInt64(count)), Int(rng.next() % UInt64(count))) }
        while !missing.isEmpty && Date().timeIntervalSince(startedAt) < 40 {
            missing = missing.filter { lookup(clients[$0], nodes[$1].address)?["record"]?["homeNode"]?.stringValue != nodes[$1].address }
            if !missing.isEmpty { usleep(500_000) }
        }
        #expect(missing.isEmpty, "lookups that never succeeded: \(missing.prefix(10))")
        // Every node with a bootstrap target reports the join done (node 0 has none and joins on its own timer).
        // Lookups can succeed through the others while a node's own join still waits for its next retry, so
        // this is polled too, within the same 40 s.
        var unjoined = Array(1..<count)
        while !unjoined.isEmpty && Date().timeIntervalSince(startedAt) < 40 {
            unjoined = unjoined.filter { (try? nodes[$0].ctlJSON(["routes"])["joined"]?.boolValue) != true }
            if !unjoined.isEmpty { usleep(500_000) }
        }
        #expect(unjoined.isEmpty, "nodes not joined: \(unjoined)")
        print("\(count) nodes started at once: \(40 - missing.count) of 40 sampled lookups succeeded within \(String(format: "%.1f", Date().timeIntervalSince(startedAt))) s")
    }

    /// `count` loopback UDP ports that were free a moment ago (bound to port 0, then released).
    private func freeLoopbackPorts(_ count: Int) throws -> [UInt16] {
        var fds: [Int32] = []
        defer { fds.forEach { close($0) } }
        return try (0..<count).map { _ in
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { throw HarnessError("socket failed") }
            fds.append(fd)
            var addr = RogueNode.loopback(port: 0)
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let rc = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 ? getsockname(fd, $0, &length) : -1 }
            }
            guard rc == 0 else { throw HarnessError("bind failed") }
            return UInt16(bigEndian: addr.sin_port)
        }
    }
}
