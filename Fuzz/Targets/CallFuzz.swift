import MeshCall
import MeshRouting

/// Call signalling and call control (docs/calls.md): each message must parse back to itself after serializing, a
/// node that hosts a wallet takes the messages from a neighbour, answering every call that rings, and both ends'
/// control states take every control message and quelch notice.
enum CallFuzz {
    static func run(_ input: [UInt8]) {
        var engine = CallEngine(wallets: [Fuzz.walletKey])
        var controls = [CallControl(caller: true), CallControl(caller: false)]
        var now = Fuzz.nowMs
        for bytes in Fuzz.messages(input) {
            if let message = CallMessage(parsing: bytes) {
                precondition(CallMessage(parsing: message.serialize()) == message, "call message round trip")
            }
            if let envelope = ControlEnvelope(parsing: bytes) {
                precondition(ControlEnvelope(parsing: envelope.serialize()) == envelope, "control message round trip")
                for i in controls.indices { _ = controls[i].receive(envelope, now: now) }
            }
            if let notice = QuelchNotice(parsing: bytes) {
                precondition(QuelchNotice(parsing: notice.serialize()) == notice, "quelch notice round trip")
                _ = controls[0].receive(notice, allowed: [Fuzz.peerKey.address])
                _ = controls[1].receive(notice, allowed: nil)
            }
            if let verdict = QualityVerdict(parsing: bytes) {
                precondition(QualityVerdict(parsing: verdict.serialize()) == verdict, "quality verdict round trip")
                _ = controls[0].receive(verdict, allowed: [Fuzz.peerKey.address], now: now)
                _ = controls[1].receive(verdict, allowed: nil, now: now)
            }
            for i in controls.indices { _ = controls[i].tick(now: now) }
            for case .incoming(let id, _, _) in engine.receive(bytes, from: Fuzz.peerKey.address, now: now) {
                _ = engine.answer(id, now: now)
            }
            _ = engine.tick(now: now)
            now += 500
        }
    }

    /// A remote wallet's real offer, then the messages that follow it.
    static func seeds() -> [[UInt8]] {
        var caller = CallEngine(wallets: [Fuzz.remoteWalletKey])
        guard let (id, actions) = caller.place(from: Fuzz.remoteWalletKey.address, to: Fuzz.walletKey.address,
                                               via: Fuzz.nodeKey.address, bitrate: 24_000, now: Fuzz.nowMs),
              case .send(let offer, _) = actions.first
        else { return [] }
        return [
            Fuzz.framed([offer]),
            Fuzz.framed([offer, CallMessage.hangup(id, .normal).serialize()]),
            Fuzz.framed([offer, offer, CallMessage.reject(id, .busy).serialize()]),
            Fuzz.framed([CallMessage.ringing(id).serialize()]),
            Fuzz.framed([ControlEnvelope(fromCaller: false, sequence: 1, message: .state(hold: true, judged: .normal, current: .normal)).serialize(),
                         ControlEnvelope(fromCaller: false, sequence: 2, message: .transfer(to: Fuzz.remoteWalletKey.address)).serialize(),
                         ControlEnvelope(fromCaller: true, sequence: 1, message: .transferFailed(.declined)).serialize()]),
            Fuzz.framed([QualityVerdict.sign(call: id.raw, tier: .degraded, sample: QualitySample(lossPercent: 7, rttMs: 40), counter: 1,
                                             key: Fuzz.peerKey).serialize(),
                         ControlEnvelope(fromCaller: true, sequence: 3, message: .propose(id: 1, tier: .normal, atMs: 500)).serialize(),
                         ControlEnvelope(fromCaller: false, sequence: 4, message: .answer(id: 1, accept: true)).serialize()]),
            Fuzz.framed([QuelchNotice.sign(call: id, on: true, counter: 1, key: Fuzz.peerKey).serialize(),
                         QuelchNotice.sign(call: id, on: false, counter: 2, key: Fuzz.peerKey).serialize()]),
        ]
    }
}
