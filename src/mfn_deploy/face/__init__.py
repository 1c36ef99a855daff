"""The face pipeline: MTCNN detection, five-point alignment, embedding, comparison."""
