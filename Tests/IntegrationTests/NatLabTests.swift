import Foundation
import MeshControl
import Testing

/// ICE through real NATs: `Tools/nat-lab` builds a small internet in network namespaces (docs/nat-lab.md) with a
/// public `mesh-node` (the STUN server: docs/stun.md) and two home networks, and runs `ice-probe` (one libnice agent,
/// docs/ice.md) in each home. Needs root; skipped otherwise.
@Suite(.serialized, .enabled(if: geteuid() == 0, "needs root (network namespaces)"))
struct NatLabTests {
    /// Two port-restricted cone NATs (MASQUERADE): the agents gather server-reflexive candidates from the mesh node,
    /// punch through, select a direct pair within 2 s of starting, and every echo comes back over it.
    @Test func coneToConeSelectsADirectPairAndDataFlows() throws {
        let (a, b) = try runProbes(homes: "cone", stun: true)
        for probe in [a, b] {
            #expect(probe["ok"]?.boolValue == true, "\(probe)")
            #expect(probe["localCandidateTypes"]?.arrayValue?.contains(.string("srflx")) == true, "no srflx from the mesh node: \(probe)")
            #expect(probe["selected"]?["relayed"]?.boolValue == false, "\(probe)")
            let ms = probe["msToSelectedPair"]?.doubleValue ?? .infinity
            #expect(ms < 2_000, "first selected pair after \(ms) ms")
        }
        // The pair goes between the NATs' public addresses.
        #expect(a["selected"]?["remote"]?["address"]?.stringValue == "198.18.0.102", "\(a)")
        #expect(b["selected"]?["remote"]?["address"]?.stringValue == "198.18.0.101", "\(b)")
        let echo = a["echo"]
        #expect(echo?["sent"]?.intValue == 20 && echo?["received"]?.intValue == 20, "\(echo ?? .null)")
    }

    /// 30 ms of delay into home `a` (nat-lab's NFQUEUE delayer): the pair still comes, and every echo round trip
    /// carries the delay once.
    @Test func aDelayedHomeShowsInTheEchoRoundTrip() throws {
        let (a, _) = try runProbes(homes: "cone", stun: true, lab: ["--delay", "a:30"])
        #expect(a["ok"]?.boolValue == true, "\(a)")
        let rtt = a["echo"]?["rttMs"]
        #expect((rtt?["min"]?.doubleValue ?? 0) >= 30 && (rtt?["median"]?.doubleValue ?? .infinity) < 60, "\(rtt ?? .null)")
    }

    /// Two symmetric NATs (MASQUERADE --random-fully) and no relay: no direct pair exists; both agents say so
    /// within a bounded time after the peer's end of gathering.
    @Test func symmetricToSymmetricWithoutTURNFailsInBoundedTime() throws {
        let (a, b) = try runProbes(homes: "symmetric", stun: true)
        for probe in [a, b] {
            #expect(probe["ok"]?.boolValue == false)
            #expect(probe["selectedPairs"]?.arrayValue?.isEmpty == true, "\(probe)")
            let ms = probe["msToFailed"]?.doubleValue ?? .infinity
            #expect(ms < 5_000, "failed after \(ms) ms: \(probe)")
        }
    }

    /// The same NATs with coturn on the internet: the agents relay, and the echoes come back through the relay.
    @Test func symmetricToSymmetricWithTURNRelays() throws {
        let (a, b) = try runProbes(homes: "symmetric", stun: false, turn: true)
        for probe in [a, b] {
            #expect(probe["ok"]?.boolValue == true, "\(probe)")
            #expect(probe["localCandidateTypes"]?.arrayValue?.contains(.string("relay")) == true, "\(probe)")
            #expect(probe["selected"]?["relayed"]?.boolValue == true, "\(probe)")
        }
        #expect((a["echo"]?["received"]?.intValue ?? 0) >= 15, "\(a["echo"] ?? .null)")
    }
}

/// Runs `Tools/nat-lab` with one public mesh node, homes `a` and `b` behind NATs of kind `homes`, the extra lab
/// arguments `lab`, and an ice-probe in each (a controlling), and returns the two probes' JSON reports. nat-lab removes its namespaces and processes
/// itself; after `timeout` it gets SIGINT (which does the same), 10 s later SIGKILL.
func runProbes(homes: String, stun: Bool, turn: Bool = false, lab: [String] = [], timeout: TimeInterval = 60) throws -> (JSONValue, JSONValue) {
    let probe = Binaries.directory + "/ice-probe"
    let servers = (stun ? " --stun $NATLAB_STUN" : "") + (turn ? " --turn $NATLAB_TURN" : "")
    var arguments = ["--public", "1", "--mesh-nodes", "--bin-dir", Binaries.directory, "--home", "a:\(homes)", "--home", "b:\(homes)",
                     "--timeout", "30", "--json",
                     "--exec", "a=\(probe) --role controlling --dir $NATLAB_WORK --timeout 8\(servers)",
                     "--exec", "b=\(probe) --role controlled --dir $NATLAB_WORK --timeout 8\(servers)"]
    if turn { arguments.append("--turn") }
    arguments += lab
    let run = try runCommand(natLabPath, arguments, timeout: timeout, stopGrace: 10, recordTimeout: false)
    let progress = run.stderr.split(separator: "\n", omittingEmptySubsequences: false).suffix(30).joined(separator: "\n")
    guard let document = try? decodeJSON(run.stdout) else {
        throw HarnessError("nat-lab: no JSON (exit \(run.status)\(run.timedOut ? ", timed out" : "")):\n\(progress)")
    }
    guard document["error"] == .null, let results = document["exec"]?.arrayValue, results.count == 2 else {
        throw HarnessError("nat-lab: \(document["error"]?.stringValue ?? "no results"):\n\(progress)")
    }
    func report(_ index: Int) throws -> JSONValue {
        guard let json = results[index]["json"] else {
            throw HarnessError("ice-probe \(results[index]["name"]?.stringValue ?? "?") printed no JSON: \(results[index]["stderr"]?.stringValue ?? "")")
        }
        return json
    }
    return (try report(0), try report(1))
}

/// The repository's `Tools/nat-lab`.
let natLabPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Tools/nat-lab").path
