"""Results: pure maths and views of a run (metrics, baselines, fairness, charts, reports); no TensorFlow."""
