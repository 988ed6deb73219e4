import CDModels
import CDTraining
import CDTensor
import Foundation
import Testing

@Suite struct TrainedConceptTests {
    @Test func fingerprintDependsOnKeysShapesAndValues() {
        let a = Tensor([1, 2, 3, 4], shape: [2, 2])
        let f = TrainedConcept.fingerprint(of: ["x": a])
        #expect(f.count == 64)
        #expect(f == TrainedConcept.fingerprint(of: ["x": a.copy()]))
        #expect(f != TrainedConcept.fingerprint(of: ["y": a]))
        #expect(f != TrainedConcept.fingerprint(of: ["x": a.reshaped([4])]))
        #expect(f != TrainedConcept.fingerprint(of: ["x": Tensor([1, 2, 3, 5], shape: [2, 2])]))
    }
}
