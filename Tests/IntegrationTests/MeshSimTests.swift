import Foundation
import Testing

/// Whole nodes at scale: `MeshSim` (release) runs 300 of the daemon's own node cores on the simulated network
/// (docs/architecture.md, "Simulator") and reports what it found; every check it makes must hold.
@Suite struct MeshSimTests {
    /// 300 nodes, 1 % loss, reordering: links and gossip converge; every node joins the DHT; 20 calls to wallets
    /// 3–6 links away (beyond gossip's radius) find their callee's home node and ride relay chains to it; media
    /// flows both ways (25 of 30 packets at least); the first relay of every chain dies and the calls move to chains without it (all but those the deaths
    /// cut off from any path within the hop limit); a wallet nobody hosts is refused with the DHT's reason.
    @Test func threeHundredNodesCarryCallsThroughRelayDeaths() throws {
        let result = try runCommand(Binaries.directory + "/MeshSim", ["--nodes", "300", "--calls", "20", "--seed", "1", "--json"],
                                    timeout: 900)
        let report = try decodeJSON(result.stdout)
        #expect(result.status == 0, "MeshSim found faults: \(report["failures"] ?? .null) \(result.stderr)")
        #expect(report["failures"]?.arrayValue?.isEmpty == true)
        #expect(report["nodes"]?.intValue == 300)
        #expect((report["routesChecked"]?.intValue ?? 0) > 3_000)
        #expect(report["convergenceFaults"]?.intValue == 0)
        #expect(report["callsPlaced"]?.intValue == 20 && report["callsEstablished"]?.intValue == 20)
        #expect((report["meanChainNodes"]?.doubleValue ?? 0) >= 3)
        #expect((report["relaysKilled"]?.intValue ?? 0) >= 10)
        let (survived, cut) = (report["callsSurvived"]?.intValue ?? 0, report["callsCut"]?.intValue ?? 0)
        #expect(survived + cut == 20 && cut <= 2, "\(survived) survived, \(cut) cut off")
        #expect(report["unknownWalletRefused"]?.boolValue == true)
        #expect((report["mediaReceived"]?.intValue ?? 0) > 0)
    }
}
