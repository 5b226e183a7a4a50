@testable import MeshCall
import MeshIdentity
import MeshTestKit
import Testing

/// Two call engines (caller node A = 0, callee node B = 1) on the simulator, back to back at zero latency; each
/// call runs the network until nothing is left to deliver at the current time.
struct CallPair {
    var sim: MeshSimulator<CallNode>
    let nodeA = PrivateKey().address
    let nodeB = PrivateKey().address
    let alice = PrivateKey()
    let bob = PrivateKey()

    init(config: CallConfig = CallConfig()) {
        var simConfig = MeshSimulator<CallNode>.Config()
        simConfig.startMs = 1_000_000
        simConfig.earlyTickCheck = .everyInput
        sim = MeshSimulator(config: simConfig)
        let directory = SimDirectory([nodeA, nodeB])
        sim.add(CallNode(CallEngine(wallets: [alice], config: config), directory: directory))
        sim.add(CallNode(CallEngine(wallets: [bob], config: config), directory: directory))
    }

    var a: CallEngine {
        get { sim.nodes[0].core }
        set { sim[node: 0].core = newValue }
    }
    var b: CallEngine {
        get { sim.nodes[1].core }
        set { sim[node: 1].core = newValue }
    }
    var now: Int64 { sim.nowMs }
    var eventsA: [CallAction] { sim.events.filter { $0.node == 0 }.map(\.action) }
    var eventsB: [CallAction] { sim.events.filter { $0.node == 1 }.map(\.action) }
    /// Whether everything A sends to B is lost.
    var dropToB: Bool {
        get { sim.drop != nil }
        set { sim.drop = newValue ? { from, _ in from == 0 } : nil }
    }

    mutating func runA(_ actions: [CallAction]) { run(actions, at: 0) }
    mutating func runB(_ actions: [CallAction]) { run(actions, at: 1) }

    private mutating func run(_ actions: [CallAction], at node: Int) {
        sim.perform(actions, at: node)
        sim.run(until: now)
        checkTicks()
    }

    mutating func place() -> CallID {
        let now = now
        let (id, actions) = sim[node: 0].core.place(from: alice.address, to: bob.address, via: nodeB, bitrate: 24_000, now: now)!
        runA(actions)
        return id
    }

    /// Every tick the simulator's check found acting before the node's deadline is a test issue.
    private mutating func checkTicks() {
        for fault in sim.takeEarlyTickFaults() { Issue.record(Comment(rawValue: fault)) }
    }

    /// Advances virtual time, each engine ticked at its deadlines.
    mutating func advance(_ ms: Int64) {
        sim.run(forMs: ms)
        checkTicks()
    }
}

@Suite struct CallEngineTests {
    @Test func offerRingsAndAnswerAgreesOnMirroredKeys() {
        var pair = CallPair()
        let id = pair.place()
        #expect(pair.eventsA == [.ringing(id)])
        #expect(pair.eventsB == [.incoming(id, caller: pair.alice.address, callee: pair.bob.address)])
        pair.runB(pair.b.answer(id, now: pair.now))
        guard case .established(_, let keysA)? = pair.eventsA.last, case .established(_, let keysB)? = pair.eventsB.last else {
            Issue.record("both sides should be established")
            return
        }
        #expect(keysA.send == keysB.receive)
        #expect(keysA.receive == keysB.send)
        #expect(keysA.send.count == 30 && keysA.send != keysA.receive)
        #expect(pair.a.calls[id]?.state == .active && pair.b.calls[id]?.state == .active)
    }

    @Test func hangupEndsBothSides() {
        var pair = CallPair()
        let id = pair.place()
        pair.runB(pair.b.answer(id, now: pair.now))
        pair.runA(pair.a.hangup(id, now: pair.now))
        #expect(pair.eventsA.last == .ended(id, .normal))
        #expect(pair.eventsB.last == .ended(id, .normal))
    }

    @Test func declineAndBusy() {
        var pair = CallPair()
        let first = pair.place()
        // Alice is in a call: she cannot place a second one.
        #expect(pair.a.place(from: pair.alice.address, to: pair.bob.address, via: pair.nodeB, bitrate: 24_000, now: pair.now) == nil)
        // Carol (on another node) calls Bob, who is ringing for Alice: busy.
        var carol = CallEngine(wallets: [PrivateKey()])
        let (_, offer) = carol.place(from: carol.hostedWallets[0], to: pair.bob.address, via: pair.nodeB, bitrate: 24_000, now: pair.now)!
        guard case .send(let bytes, _) = offer[0], case .send(let reply, _)? = pair.b.receive(bytes, from: PrivateKey().address, now: pair.now).first,
              case .reject(_, let reason)? = CallMessage(parsing: reply) else {
            Issue.record("expected a reject")
            return
        }
        #expect(reason == .busy)
        pair.runB(pair.b.hangup(first, reason: .declined, now: pair.now))
        #expect(pair.eventsA.last == .ended(first, .declined))
    }

    @Test func offeredBitrateIsClampedToWhatOpusAccepts() {
        var pair = CallPair()
        let (id, actions) = pair.a.place(from: pair.alice.address, to: pair.bob.address, via: pair.nodeB, bitrate: 5_000_000, now: pair.now)!
        pair.runA(actions)
        #expect(pair.b.calls[id]?.bitrate == 128_000)
    }

    @Test func unknownCalleeIsRejected() {
        var pair = CallPair()
        let stranger = PrivateKey().address
        let (id, actions) = pair.a.place(from: pair.alice.address, to: stranger, via: pair.nodeB, bitrate: 24_000, now: pair.now)!
        pair.runA(actions)
        #expect(pair.eventsA.last == .ended(id, .unknownCallee))
    }

    @Test func lostOfferIsRetransmittedAndSilenceTimesOut() {
        var pair = CallPair()
        pair.dropToB = true
        let id = pair.place()
        pair.advance(1_500)
        pair.dropToB = false
        pair.advance(1_000)
        #expect(pair.eventsA.contains(.ringing(id)))
        #expect(pair.eventsB.count == 1)

        var lonely = CallPair()
        lonely.dropToB = true
        let unanswered = lonely.place()
        lonely.advance(5_000)
        #expect(lonely.eventsA.last == .ended(unanswered, .noResponse))
    }

    @Test func ringingTimesOutAndActiveCallNeedsMedia() {
        var pair = CallPair()
        let id = pair.place()
        pair.advance(30_000)
        #expect(pair.eventsA.last == .ended(id, .noAnswer))
        #expect(pair.eventsB.last == .ended(id, .noAnswer))

        var live = CallPair()
        let call = live.place()
        live.runB(live.b.answer(call, now: live.now))
        for _ in 0..<50 {
            live.advance(200)
            live.a.mediaArrived(call, now: live.now)
            live.b.mediaArrived(call, now: live.now)
        }
        #expect(live.a.calls[call]?.state == .active)
        live.advance(10_000)
        #expect(live.eventsA.last == .ended(call, .mediaTimeout))
    }

    @Test func forgedCallerIsRejected() {
        var pair = CallPair()
        let mallory = PrivateKey()
        var engine = CallEngine(wallets: [mallory])
        let (_, actions) = engine.place(from: mallory.address, to: pair.bob.address, via: pair.nodeB, bitrate: 24_000, now: 0)!
        guard case .send(let bytes, _) = actions[0], case .offer(var offer)? = CallMessage(parsing: bytes) else {
            Issue.record("expected an offer")
            return
        }
        offer.caller = pair.alice.address
        let replies = pair.b.receive(CallMessage.offer(offer).serialize(), from: pair.nodeA, now: pair.now)
        guard case .send(let reply, _) = replies.first else {
            Issue.record("expected a reject")
            return
        }
        #expect(CallMessage(parsing: reply) == .reject(offer.callID, .badSignature))
        #expect(pair.b.calls.isEmpty)
    }

    @Test func substitutedAnswerKeyIsRefusedByTheCaller() {
        var pair = CallPair()
        let id = pair.place()
        var answers = pair.b.answer(id, now: pair.now)
        guard case .send(let bytes, let to) = answers[0], case .answer(var answer)? = CallMessage(parsing: bytes) else {
            Issue.record("expected an answer")
            return
        }
        // A node in the middle swaps in its own ephemeral key.
        answer.ephemeral = (0..<32).map { UInt8($0) }
        answers[0] = .send(CallMessage.answer(answer).serialize(), to: to)
        pair.runB(answers)
        #expect(pair.eventsA.last == .ended(id, .badSignature))
    }

    @Test func malformedSignallingIsCountedNotFatal() {
        var pair = CallPair()
        var rng = SplitMix64(seed: 1)
        for length in 0..<300 {
            _ = pair.b.receive(rng.bytes(length % 150), from: pair.nodeA, now: pair.now)
        }
        #expect(pair.b.malformed > 250)
        #expect(pair.b.calls.isEmpty)
    }

    @Test func staleAndReplayedOffersDoNotRing() throws {
        var pair = CallPair()
        let placed = pair.a.place(from: pair.alice.address, to: pair.bob.address, via: pair.nodeB, bitrate: 24_000,
                                  now: pair.now)
        let (id, actions) = try #require(placed)
        guard case .send(let offer, _) = try #require(actions.first) else {
            Issue.record("no offer sent")
            return
        }
        // Delivered 121 s after it was signed (or to a callee whose clock is 121 s ahead): refused, nothing rings.
        let late = pair.b.receive(offer, from: pair.nodeA, now: pair.now + 121_000)
        #expect(late == [.send(CallMessage.reject(id, .staleOffer).serialize(), to: pair.nodeA)])
        #expect(pair.b.calls.isEmpty && pair.b.staleOffers == 1)
        #expect(CallEndReason.staleOffer.description.contains("clocks"))

        // In time it rings; the call ends; a recording of the same offer replayed once the ended call is
        // forgotten (30 s) and while its timestamp is still in the window gets nothing, and later it is stale.
        let fresh = pair.b.receive(offer, from: pair.nodeA, now: pair.now + 1_000)
        #expect(fresh.contains(.incoming(id, caller: pair.alice.address, callee: pair.bob.address)))
        _ = pair.b.hangup(id, now: pair.now + 2_000)
        _ = pair.b.tick(now: pair.now + 40_000)
        #expect(pair.b.calls[id] == nil)
        #expect(pair.b.receive(offer, from: pair.nodeA, now: pair.now + 45_000).isEmpty)
        _ = pair.b.tick(now: pair.now + 250_000)
        #expect(pair.b.receive(offer, from: pair.nodeA, now: pair.now + 250_000)
            == [.send(CallMessage.reject(id, .staleOffer).serialize(), to: pair.nodeA)])
        #expect(pair.b.calls[id] == nil)
    }

    @Test func aRefusedOfferGetsTheSameRefusalAgain() throws {
        var pair = CallPair()
        pair.b = CallEngine(wallets: [PrivateKey()])  // bob is not hosted there
        let id = pair.place()
        #expect(pair.eventsA.contains(.ended(id, .unknownCallee)))
        // The caller's retransmission (its first reject lost) is answered with the same refusal.
        let offer = try #require(pair.a.calls[id]?.offer)
        let again = pair.b.receive(CallMessage.offer(offer).serialize(), from: pair.nodeA, now: pair.now + 500)
        #expect(again == [.send(CallMessage.reject(id, .unknownCallee).serialize(), to: pair.nodeA)])
    }

    @Test func messagesRoundTrip() {
        let key = PrivateKey()
        let id = CallID(raw: 0x0123_4567_89ab_cdef)
        #expect(id.description == "0123456789abcdef")
        #expect(CallID(hex: "0123456789abcdef") == id)
        let sig = key.sign(digest: [UInt8](repeating: 1, count: 32))
        let messages: [CallMessage] = [
            .offer(.init(callID: id, caller: key.address, callee: key.address, ephemeral: Array(repeating: 3, count: 32),
                         timestampMs: 99, bitrate: 24_000, signature: sig)),
            .ringing(id), .answer(.init(callID: id, ephemeral: Array(repeating: 4, count: 32), signature: sig)),
            .reject(id, .busy), .hangup(id, .normal),
        ]
        for m in messages {
            #expect(CallMessage(parsing: m.serialize()) == m)
            #expect(CallMessage(parsing: m.serialize() + [0]) == nil)
            #expect(CallMessage(parsing: Array(m.serialize().dropLast())) == nil)
        }
    }
}
