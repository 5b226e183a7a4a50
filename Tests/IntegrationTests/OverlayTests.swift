import Foundation
import MeshControl
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
}
