import Foundation
import MeshICE
import Testing

/// Two real libnice agents in one process on loopback, candidates trickled straight from one to the other.
@Suite struct ICEAgentTests {
    /// Collects an agent's events from the ICE thread; tests wait on it with a timeout.
    final class Events: @unchecked Sendable {
        private let lock = NSLock()
        private var events: [ICEEvent] = []

        func append(_ event: ICEEvent) { lock.withLock { events.append(event) } }
        var all: [ICEEvent] { lock.withLock { events } }

        /// Polls until `condition` holds over the events so far, or `timeout` seconds pass.
        func wait(_ timeout: Double, _ condition: ([ICEEvent]) -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if condition(all) { return true }
                usleep(5_000)
            }
            return condition(all)
        }
    }

    static func loopbackSettings() -> ICESettings {
        var settings = ICESettings()
        settings.localAddresses = ["127.0.0.1"]
        return settings
    }

    /// Wires two agents together: each one's candidates and end of gathering go to the other.
    static func pair(_ settings: ICESettings = loopbackSettings()) throws -> (ICEAgent, Events, ICEAgent, Events) {
        let (aEvents, bEvents) = (Events(), Events())
        let box = PeerBox()
        let a = try ICEAgent(controlling: true, settings: settings) { event in
            aEvents.append(event)
            box.forward(event, to: box.b)
        }
        let b = try ICEAgent(controlling: false, settings: settings) { event in
            bEvents.append(event)
            box.forward(event, to: box.a)
        }
        box.set(a, b)
        let (ac, bc) = (a.localCredentials(), b.localCredentials())
        a.setRemote(ufrag: bc.ufrag, password: bc.password)
        b.setRemote(ufrag: ac.ufrag, password: ac.password)
        a.start()
        b.start()
        return (a, aEvents, b, bEvents)
    }

    final class PeerBox: @unchecked Sendable {
        private let lock = NSLock()
        private var agents: (ICEAgent, ICEAgent)?
        func set(_ a: ICEAgent, _ b: ICEAgent) { lock.withLock { agents = (a, b) } }
        var a: ICEAgent? { lock.withLock { agents?.0 } }
        var b: ICEAgent? { lock.withLock { agents?.1 } }
        /// Candidates gathered before both agents exist are lost to the test; `start` comes after `set`.
        func forward(_ event: ICEEvent, to peer: ICEAgent?) {
            switch event {
            case .localCandidate(let sdp): peer?.addRemoteCandidate(sdp)
            case .gatheringDone: peer?.remoteGatheringDone()
            default: break
            }
        }
    }

    @Test func twoAgentsSelectAHostPairAndExchangeData() throws {
        let (a, aEvents, b, bEvents) = try Self.pair()
        defer {
            a.close()
            b.close()
        }
        #expect(a.localCredentials().ufrag.count >= 4 && a.localCredentials().password.count >= 22)
        #expect(aEvents.wait(5) { $0.contains(.gatheringDone) })
        #expect(aEvents.all.contains { if case .localCandidate(let s) = $0 { s.hasPrefix("a=candidate:") && s.contains("127.0.0.1") } else { false } })
        #expect(aEvents.wait(5) { $0.contains { if case .selectedPair = $0 { true } else { false } } })
        #expect(bEvents.wait(5) { $0.contains { if case .selectedPair = $0 { true } else { false } } })
        let pair = try #require(a.selectedPair)
        #expect(pair.local.kind == .host && pair.local.address == "127.0.0.1" && pair.remote.kind == .host)
        #expect(a.send([1, 2, 3]))
        #expect(bEvents.wait(5) { $0.contains(.received([1, 2, 3])) })
        #expect(b.send([4, 5]))
        #expect(aEvents.wait(5) { $0.contains(.received([4, 5])) })
    }

    /// A peer whose only candidate leads nowhere: the agent says `.failed` within a bounded time after the peer's
    /// end of gathering, and nothing comes after `close()`.
    @Test func checksThatCannotSucceedFailInBoundedTime() throws {
        let events = Events()
        let agent = try ICEAgent(controlling: true, settings: Self.loopbackSettings()) { events.append($0) }
        agent.setRemote(ufrag: "abcd", password: "abcdefghijklmnopqrstuvwxyz")
        agent.start()
        // A port on loopback nobody listens on: every check meets ICMP port unreachable or silence.
        #expect(agent.addRemoteCandidate("a=candidate:1 1 UDP 2130706431 127.0.0.1 9 typ host"))
        #expect(!agent.addRemoteCandidate("a=candidate:garbage"))
        agent.remoteGatheringDone()
        let started = Date()
        #expect(events.wait(10) { $0.contains(.failed) })
        #expect(Date().timeIntervalSince(started) < 10)
        agent.close()
        let count = events.all.count
        #expect(!agent.send([1]))
        usleep(200_000)
        #expect(events.all.count == count)
    }
}
